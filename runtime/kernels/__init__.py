"""The kernel emitters: one module per kernel family, each registering the emitters of its ops
(registry.kernel / registry.simple_kernel). Importing this package imports every module in it, so
a new kernel module registers itself; lowering asks `emitter_for(op)`."""
from __future__ import annotations

import importlib
import pkgutil

from .registry import EMITTERS, Emitter, code_key, emitter_for, supports_symbolic

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["EMITTERS", "Emitter", "code_key", "emitter_for", "supports_symbolic"]
