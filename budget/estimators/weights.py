"""Weights of a model directory: its safetensors headers when present, else the count from its shipped config."""
from __future__ import annotations

from collections.abc import Callable

from budget.model_files import ModelFiles
from budget.estimate import PlanInputError
from budget.tensors import converted_bytes, read_safetensors_dir
from budget.units import dtype_bytes, human


def checkpoint_weights(name: str, files: ModelFiles, dtype: str, count: Callable[[], int]) -> tuple[int, int, str]:
    """(parameters, bytes in the serving dtype, the formula); a real directory must hold safetensors."""
    tensors = [] if files.config_only else read_safetensors_dir(files.directory)
    if tensors:
        params = sum(t.numel for t in tensors if t.is_float)
        weights = converted_bytes(tensors, dtype)
        return params, weights, (f"{len(tensors)} tensors from safetensors headers, {params:,} parameters, "
                                 f"floats cast to {dtype} = {human(weights)}")
    if not files.config_only:
        raise PlanInputError(f"model {name!r}: {files.directory} has a config.json but no *.safetensors weights; "
                             "the engines load safetensors only (convert .bin checkpoints first)")
    params = count()
    weights = int(params * dtype_bytes(dtype))
    formula = f"{params:,} parameters from config × {dtype_bytes(dtype):g} B ({dtype}) = {human(weights)}"
    return params, weights, formula
