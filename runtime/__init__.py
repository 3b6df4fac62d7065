"""convc.runtime: lowering of canonical graphs to LLVM IR, JIT compilation and execution."""
