"""GGUF blocks for the quantized-weight tests: random ones of any type, and one real tensor of each type in a file."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader
from gguf.quants import quantize

# Where each k-quant block keeps its float16 super-block scales (d, and dmin where there is one): byte offsets.
K_SCALES = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}
QWEN = ("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
SMOL = ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
DEMO_TYPES = {QWEN: {"Q4_K", "Q5_0", "Q6_K", "Q8_0"}, SMOL: {"Q4_1", "Q8_0"}}  # what each demo file holds


def random_blocks(type_name: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """[rows, row bytes]: random weights packed by gguf's own quantizer, or, for the k-quants (gguf has no quantizer
    for them), random bytes (every bit pattern of codes and 6-bit scales is a valid block) with finite float16
    super-block scales."""
    kind = GGMLQuantizationType[type_name]
    if type_name not in K_SCALES:
        weights = rng.standard_normal((rows, cols)) * rng.uniform(0.01, 1, (rows, 1))
        return quantize(weights.astype(np.float32), kind)
    block_weights, block_bytes = GGML_QUANT_SIZES[kind]
    blocks = rng.integers(0, 256, (rows, cols // block_weights, block_bytes), dtype=np.uint8)
    for at in K_SCALES[type_name]:
        scale = rng.uniform(0.001, 0.02, blocks.shape[:2]).astype(np.float16)
        blocks[:, :, at:at + 2] = scale[..., None].view(np.uint8).reshape(*blocks.shape[:2], 2)
    return blocks.reshape(rows, -1)


def one_tensor_of_each_type(path: Path, most_rows: int = 512) -> Iterator[tuple[str, np.ndarray, tuple[int, int]]]:
    """(type, blocks, [rows, cols]) for the first quantized 2-D tensor of each type in the file, cut to its first
    `most_rows` rows (enough for a check, cheap on an LM head)."""
    seen = set()
    for tensor in GGUFReader(path).tensors:
        kind = tensor.tensor_type.name
        if len(tensor.shape) != 2 or kind in seen or kind in ("F32", "F16", "BF16"):
            continue
        seen.add(kind)
        rows = min(int(tensor.shape[1]), most_rows)
        yield kind, np.asarray(tensor.data)[:rows], (rows, int(tensor.shape[0]))
