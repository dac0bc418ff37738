"""The C++ CPU decode layers (cpu_decode.cpp), built once per machine into torch's extension cache.

scripts/setup.sh builds it, so serving and tests only load it; where no compiler builds it the engine keeps the
layer-by-layer Python path and says so in the log.
"""
from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("cpu_decode.cpp")
FLAGS = ["-O3", "-march=native", "-fopenmp"]


@cache
def extension() -> ModuleType | None:
    """The compiled module (built on first use, about 30 s on 2 cores, then loaded from the cache), or None."""
    from torch.utils.cpp_extension import load

    try:
        return load("orchestrator_cpu_decode", [str(SOURCE)], extra_cflags=FLAGS, extra_ldflags=["-fopenmp"])
    except (OSError, RuntimeError, ImportError) as error:  # no compiler, headers or ninja on this machine
        log.warning("the CPU decode layers did not build (%s): decode steps run layer by layer in Python", error)
        return None
