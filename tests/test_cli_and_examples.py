"""The command line and every example script."""
import pathlib
import subprocess
import sys

import pytest

from convc.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_runs(example):
    result = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


@pytest.mark.parametrize("stage, marker", [("traced", "padding="), ("optimized", "pad_lo="),
                                           ("llvm", "define void @convc_main"), ("asm", "convc_main:")])
def test_dump_stages(stage, marker, capsys):
    assert main(["dump", str(ROOT / "examples" / "conv_stack.py"), "--stage", stage]) == 0
    assert marker in capsys.readouterr().out


def test_run_reports_outputs_and_the_reference_difference(capsys):
    assert main(["run", str(ROOT / "examples" / "conv_stack.py")]) == 0
    out = capsys.readouterr().out
    assert "output 0: float32[2, 8, 15, 15]" in out and "max abs difference from reference" in out


def test_missing_or_empty_model_files_are_clear_errors(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.py")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "empty.py").write_text("x = 1\n")
    assert main(["dump", str(tmp_path / "empty.py")]) == 2
    assert "defines no callable `model`" in capsys.readouterr().err
    (tmp_path / "noinputs.py").write_text("from convc import ops\nmodel = ops.relu\n")
    assert main(["run", str(tmp_path / "noinputs.py")]) == 2
    assert "defines no `example_inputs`" in capsys.readouterr().err


def test_invalid_models_report_the_convc_error(tmp_path, capsys):
    (tmp_path / "bad.py").write_text(
        "import numpy as np\nfrom convc import ops\n"
        "model = lambda x: ops.conv2d(x, np.zeros((4, 3, 3, 3), np.float32), groups=2)\n"
        "example_inputs = (np.zeros((1, 4, 8, 8), np.float32),)\n")
    assert main(["run", str(tmp_path / "bad.py")]) == 1
    assert "ConvcError: conv2d:" in capsys.readouterr().err


def test_help_and_console_script(tmp_path):
    # run outside the checkout so that the installed package is the one imported
    result = subprocess.run([sys.executable, "-m", "convc", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and "dump" in result.stdout and "example_inputs" in result.stdout
