"""The C++ CPU kernels, built once per machine into torch's extension cache: a decode step's fused layers
(cpu_decode.cpp) and the matmul over GGUF's own blocks (ggml_matmul.cpp).

scripts/setup.sh builds it, so serving and tests only load it. Where no compiler builds it the engine keeps the
layer-by-layer Python path and holds GGUF weights in torch's int4/int8 layouts, and says so in the log.
"""
from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)
SOURCES = [str(Path(__file__).with_name(name)) for name in ("cpu_decode.cpp", "ggml_matmul.cpp")]
FLAGS = ["-O3", "-march=native", "-fopenmp"]


@cache
def extension() -> ModuleType | None:
    """The compiled module (built on first use, about 40 s on 2 cores, then loaded from the cache), or None."""
    from torch.utils.cpp_extension import load

    try:
        return load("orchestrator_cpu_kernels", SOURCES, extra_cflags=FLAGS, extra_ldflags=["-fopenmp"])
    except (OSError, RuntimeError, ImportError) as error:  # no compiler, headers or ninja on this machine
        log.warning("the C++ CPU kernels did not build (%s): decode steps run layer by layer in Python and GGUF "
                    "weights are repacked for torch's kernels", error)
        return None
