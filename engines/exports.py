"""Package exports that load on first use (PEP 562), so importing one light module of a kind's package (a record,
the text splitter) does not import its model code and torch with it."""
from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, homes: dict[str, str]) -> tuple[Callable[[str], object], list[str]]:
    """(`__getattr__`, `__all__`) for `package`: `homes` maps a module (relative to the package, or absolute) to the
    space-separated names it exports; each is imported from there when first asked for."""
    home_of = {name: module if "." in module else f"{package}.{module}"
               for module, names in homes.items() for name in names.split()}

    def __getattr__(name: str) -> object:
        if name not in home_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(home_of[name]), name)

    return __getattr__, sorted(home_of)
