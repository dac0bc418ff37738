"""Tensor inventories read from checkpoint headers: safetensors (single or sharded) and CTranslate2 model.bin."""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from budget.units import DTYPE_BYTES, FLOAT_DTYPES

# CTranslate2's DataType enum order (include/ctranslate2/types.h), mapped to safetensors' dtype names.
_CT2_DTYPES = ("F32", "I8", "I16", "I32", "F16", "BF16")
_HEADER_LIMIT = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint file that is not what its name says; the message names the file."""


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One stored tensor: what it is, not its data."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES


def read_safetensors_header(path: Path) -> list[TensorInfo]:
    """The tensors of one .safetensors file, from its JSON header alone (8-byte length, then JSON)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"{path} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > _HEADER_LIMIT:
            raise CheckpointError(f"{path} has a {length}-byte header; it is not a safetensors file")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path} has an unreadable safetensors header: {exc}") from None
    tensors = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        tensors.append(TensorInfo(name, meta["dtype"], tuple(meta["shape"]), end - start))
    return tensors


def safetensors_files(model_dir: Path) -> list[Path]:
    """The weight files of a HF model dir: the shards its index names, else every *.safetensors."""
    for index in sorted(model_dir.glob("*.safetensors.index.json")):
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index} is not a safetensors index (no weight_map): {exc}") from None
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (model_dir / s).is_file()]
        if missing:
            raise CheckpointError(f"{index} names shards that are not there: {', '.join(missing)}")
        return [model_dir / s for s in shards]
    return sorted(model_dir.glob("*.safetensors"))


def read_safetensors_dir(model_dir: Path) -> list[TensorInfo]:
    """Every tensor of a HF model dir, across shards; empty when it holds no safetensors."""
    return [t for f in safetensors_files(model_dir) for t in read_safetensors_header(f)]


def read_ct2_model(path: Path) -> list[TensorInfo]:
    """The variables of a CTranslate2 model.bin (binary version >= 4), seeking past each tensor's data."""
    with open(path, "rb") as f:

        def take(fmt: str):
            size = struct.calcsize("<" + fmt)
            raw = f.read(size)
            if len(raw) != size:
                raise CheckpointError(f"{path} ends early; it is not a complete CTranslate2 model (a download cut "
                                      "short, or a split model.bin not joined from all its parts): fetch it again, "
                                      "or reconvert it with ct2-transformers-converter")
            return struct.unpack("<" + fmt, raw)

        def string() -> str:
            (length,) = take("H")
            return f.read(length)[:-1].decode("utf-8")

        (version,) = take("I")
        if not 4 <= version <= 6:
            raise CheckpointError(f"{path}: CTranslate2 binary version {version} is not supported (4 to 6 are)")
        string()
        take("I")
        (count,) = take("I")
        variables = []
        for _ in range(count):
            name = string()
            (rank,) = take("B")
            shape = take(f"{rank}I") if rank else ()
            type_id, nbytes = take("BI")
            if type_id >= len(_CT2_DTYPES):
                raise CheckpointError(f"{path}: variable {name} has unknown type id {type_id}")
            variables.append(TensorInfo(name, _CT2_DTYPES[type_id], tuple(shape), nbytes))
            f.seek(nbytes, 1)
    return variables


def converted_bytes(tensors: list[TensorInfo], dtype: str) -> int:
    """Bytes once floating tensors are cast to the serving dtype; integer tensors stay as stored."""
    per = DTYPE_BYTES[dtype]
    return sum(int(t.numel * per) if t.is_float else t.nbytes for t in tensors)
