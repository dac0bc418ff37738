"""Byte sizes as people write them (`512MiB`, `24GiB`, `1.5GB`) and as the report prints them."""
from __future__ import annotations

import math
import re

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "ki": KiB, "kib": KiB, "mi": MiB, "mib": MiB, "gi": GiB, "gib": GiB, "ti": TiB, "tib": TiB,
}
_SIZE = re.compile(r"^\s*(-?\d+(?:\.\d+)?|-?\.\d+)\s*([a-zA-Z]*)\s*$")

# Bytes per element of the dtypes a stack or a checkpoint can name.
DTYPE_BYTES: dict[str, float] = {
    "float32": 4, "fp32": 4, "float": 4, "F32": 4,
    "float16": 2, "fp16": 2, "half": 2, "F16": 2,
    "bfloat16": 2, "bf16": 2, "BF16": 2,
    "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "float64": 8, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


class SizeError(ValueError):
    """A size string that cannot be read; the message says what is accepted."""


def parse_size(value: int | float | str) -> int:
    """Read `512MiB`, `24GiB`, `1.5GB`, `1024` (bytes) into a byte count; refuses negatives."""
    if isinstance(value, bool):
        raise SizeError(f"{value!r} is not a size; write bytes like 512MiB, 24GiB or 1.5GB")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = _SIZE.match(str(value))
        if not match or match.group(2).lower() not in _UNITS:
            raise SizeError(f"{value!r} is not a size; write bytes like 512MiB, 24GiB or 1.5GB")
        number, unit = float(match.group(1)), match.group(2).lower()
    if number < 0 or not math.isfinite(number):
        raise SizeError(f"{value!r} is negative; a size must be 0 or more, like 512MiB")
    return int(number * _UNITS[unit])


def gib(n: float) -> str:
    """Bytes as GiB with two decimals, the unit nvidia-smi users compare against."""
    return f"{n / GiB:.2f} GiB"


def human(n: float) -> str:
    """Bytes in the largest binary unit that keeps the number readable."""
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{sign}{n / size:.2f} {unit}"
    return f"{sign}{int(n)} B"


def dtype_bytes(dtype: str) -> float:
    """Bytes per element of a dtype name; unknown names are a clear error."""
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise SizeError(f"unknown dtype {dtype!r}; use one of bfloat16, float16, float32, fp8") from None
