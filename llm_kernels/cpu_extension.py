"""The C++ CPU kernels, built once per machine into torch's extension cache: a decode step's fused layers
(cpu_decode.cpp) and the matmul over GGUF's own blocks (ggml_matmul.cpp).

scripts/setup.sh builds it, so serving and tests only load it. Where no compiler builds it the engine keeps the
layer-by-layer Python path and holds GGUF weights in torch's int4/int8 layouts, and says so in the log.
"""
from __future__ import annotations

import hashlib
import logging
from functools import cache
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
SOURCES = [HERE / "cpu_decode.cpp", HERE / "ggml_matmul.cpp"]
FLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off"]  # a*b + c rounded twice, as PyTorch and gguf do


def _name() -> str:
    """The module's name carries its sources' hash: two checkouts of different code never share a build."""
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in [*SOURCES, HERE / "ggml_matmul.h"])).hexdigest()
    return f"orchestrator_cpu_kernels_{digest[:12]}"


@cache
def extension() -> ModuleType | None:
    """The compiled module (built on first use, about 40 s on 2 cores, then loaded from the cache), or None."""
    from torch.utils.cpp_extension import load

    try:
        return load(_name(), [str(p) for p in SOURCES], extra_cflags=FLAGS, extra_ldflags=["-fopenmp"])
    except (OSError, RuntimeError, ImportError) as error:  # no compiler, headers or ninja on this machine
        log.warning("the C++ CPU kernels did not build (%s): decode steps run layer by layer in Python and GGUF "
                    "weights are repacked for torch's kernels", error)
        return None
