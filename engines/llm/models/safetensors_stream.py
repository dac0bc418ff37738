"""Read a .safetensors file one tensor at a time with plain reads, not a memory map: a map's pages stay resident (and
count against the process) until the file closes, which doubled a CPU load's peak (weights + the whole file)."""
from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import torch

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


def read_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, CPU tensor) in file order; each tensor is its own allocation, read straight into it."""
    with open(path, "rb", buffering=0) as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        header.pop("__metadata__", None)
        for name, meta in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            if meta["dtype"] not in DTYPES:
                raise ValueError(f"{path.name}: tensor {name!r} has dtype {meta['dtype']}, which is not read")
            start, end = meta["data_offsets"]
            tensor = torch.empty(meta["shape"], dtype=DTYPES[meta["dtype"]])
            _read_into(f, 8 + length + start, memoryview(tensor.reshape(-1).view(torch.uint8).numpy()), path, name)
            if end > start:  # the page cache need not keep what is now in the tensor
                os.posix_fadvise(f.fileno(), 8 + length + start, end - start, os.POSIX_FADV_DONTNEED)
            yield name, tensor


def _read_into(f, offset: int, buffer: memoryview, path: Path, name: str) -> None:
    """Fill `buffer` from `offset`; a single read may return less (Linux caps one read near 2 GiB)."""
    done = 0
    while done < len(buffer):
        got = os.preadv(f.fileno(), [buffer[done:]], offset + done)
        if got <= 0:
            raise ValueError(f"{path.name}: tensor {name!r} ends past the end of the file; the file is truncated")
        done += got
