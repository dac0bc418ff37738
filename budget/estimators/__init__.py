"""One estimator per model kind, each reading real files (or a shipped config) without loading weights; a stack
entry's schema names its kind's estimator (`estimator`), so a new kind is not a new row here."""
from __future__ import annotations

import importlib

from budget.estimate import Estimate


def estimate(spec, on_gpu: bool) -> Estimate:
    """The estimate for one stack model entry."""
    module, _, name = type(spec).estimator.partition(":")
    return getattr(importlib.import_module(module), name)(spec, on_gpu)
