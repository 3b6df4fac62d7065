"""convc: a compiler that lowers convolution graphs to LLVM-JIT-compiled CPU kernels.

    import convc
    from convc import ops, nn
    graph = convc.trace(model, example)     # a Graph; print(graph) shows the IR
    compiled = convc.compile(graph)         # passes + LLVM codegen + JIT
    y = compiled(example)
"""
import importlib as _importlib
import os as _os
import pkgutil as _pkgutil

# In a source checkout passes/ and runtime/ sit beside this folder instead of inside it (they install
# as convc.passes and convc.runtime): let convc's submodule search see them there too, so that Python
# started at the checkout's root imports the whole package from source.
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(__path__[0], "passes")) and _os.path.isfile(
        _os.path.join(_checkout, "passes", "__init__.py")):
    __path__.append(_checkout)

for _module in _pkgutil.iter_modules(__path__[:1]):  # each op_*.py registers the ops it defines
    if _module.name.startswith("op_"):
        _importlib.import_module(f"{__name__}.{_module.name}")
from .compiler import Compiled, compile
from .eager import clear_caches
from .errors import ConvcError
from .shared_library import export
from .ir import Graph, Node
from .library import Library, load
from .options import Options
from .parser import parse
from .tracing import Tensor, trace
from .torch_import import from_torch
from .onnx_import import from_onnx
from .symbolic import Dim
from .types import TensorType
from .verifier import verify
from . import ops  # noqa: E402
from . import nn  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Compiled", "ConvcError", "Dim", "Graph", "Library", "Node", "Options", "Tensor", "TensorType", "clear_caches",
           "compile", "export", "from_onnx", "from_torch", "load", "nn", "ops", "parse", "trace", "verify"]
