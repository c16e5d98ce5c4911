"""``torch``, imported on its first use.

Validating a dataset reads it with numpy, pyarrow and PIL only; importing torch would cost a
sandboxed validation about 2 s of its 2.5 (and its memory). The modules a dataset's
validation goes through (``data``, ``rows``, ``images``, ``guard``, ``token_data``,
``tokens``) take ``torch`` from here; every other module imports it as usual.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for a module until an attribute is asked for, then imports it."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        module: ModuleType = importlib.import_module(self._name)
        return getattr(module, attr)


torch = LazyModule("torch")
