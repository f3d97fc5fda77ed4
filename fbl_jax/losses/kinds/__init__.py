"""The loss kinds, one module per kind or family; importing this package registers them all.

Modules are found with pkgutil, so a new kind is a new module here (declaring a `LossKind` and
calling `registry.register`) and no other file changes.
"""

from __future__ import annotations

import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
