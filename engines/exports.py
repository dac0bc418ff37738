"""Package exports that load on first use (PEP 562), so importing one light module of a kind's package (a record,
the text splitter) does not import its model code and torch with it."""
from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, homes: dict[str, str]) -> Callable[[str], object]:
    """A module-level __getattr__ for `package` that imports each name from its home module when first asked."""

    def __getattr__(name: str) -> object:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(homes[name]), name)

    return __getattr__
