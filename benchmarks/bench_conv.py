"""Conv kernels: GFLOP/s, % of the measured FMA peak of all cores, and the ratio to torch (CPU)
on the same data in the same run. Usage: python benchmarks/bench_conv.py [--min-time SECONDS]"""
import argparse

from convc.bench import run_conv_benchmarks

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per measurement")
    run_conv_benchmarks(min_time=parser.parse_args().min_time)
