"""Where a compile's time goes: each stage (tracing, every pass, lowering, LLVM, loading), each
kernel's emission and the LLVM parts it was compiled in. `convc.compile` fills one per graph
(`compiled.compile_times`); `convc dump MODEL --stage timing` prints it."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class KernelTime:
    """One kernel's Python emission: its function, op, seconds and size of LLVM IR text."""

    name: str
    op: str
    seconds: float
    ir_chars: int = 0


@dataclass
class PartTime:
    """One LLVM part (optimization and code generation of some kernel modules): where it ran
    ('worker' or 'here', the compiling process) and for how long."""

    modules: list[str]
    seconds: float
    where: str


@dataclass
class CompileTimes:
    stages: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds, in order
    kernels: list[KernelTime] = field(default_factory=list)
    parts: list[PartTime] = field(default_factory=list)
    cache_hit: bool = False

    @property
    def total(self) -> float:
        return sum(self.stages.values())

    def table(self, top: int = 15) -> str:
        """The stages, then the slowest LLVM parts and kernels, as aligned text."""
        lines = [f"{'stage':<44} {'s':>8} {'%':>6}"]
        total = self.total or 1.0
        for stage, seconds in self.stages.items():
            lines.append(f"{stage:<44} {seconds:8.3f} {100 * seconds / total:6.1f}")
        lines.append(f"{'total' + (' (disk cache hit)' if self.cache_hit else ''):<44} {self.total:8.3f}")
        if self.parts:
            busy = {where: sum(p.seconds for p in self.parts if p.where == where) for where in ("here", "worker")}
            lines += ["", f"LLVM parts: {len(self.parts)}; seconds in this process {busy['here']:.3f}, "
                          f"in workers {busy['worker']:.3f}",
                      f"{'part (kernel modules)':<60} {'where':>6} {'s':>8}"]
            for part in sorted(self.parts, key=lambda p: -p.seconds)[:top]:
                names = ", ".join(part.modules)
                lines.append(f"{names[:57] + '...' if len(names) > 60 else names:<60} {part.where:>6} "
                             f"{part.seconds:8.3f}")
        if self.kernels:
            lines += ["", f"kernels emitted: {len(self.kernels)}, "
                          f"{sum(k.ir_chars for k in self.kernels) / 1e6:.2f} M characters of LLVM IR",
                      f"{'kernel':<40} {'op':<20} {'emit s':>8} {'IR chars':>10}"]
            for kernel in sorted(self.kernels, key=lambda k: -k.ir_chars)[:top]:
                lines.append(f"{kernel.name:<40} {kernel.op:<20} {kernel.seconds:8.3f} {kernel.ir_chars:10d}")
        return "\n".join(lines) + "\n"
