"""Weight-only quantized tensors as the loader hands them to QuantLinear: integer codes plus their scales.

Two stored formats, the two that torch's packed CPU kernels serve fast with bfloat16 activations:
- INT4: codes 0..15 in groups of GROUP along the input, w = (q - 8) * scale + zero (torch's int4pack convention).
  GGUF Q4_0, Q4_1 and Q4_K are repacked into it code for code; only their fp16 scales become bfloat16.
- INT8: codes -127..127 with one scale per output row. GGUF Q8_0, Q5_0, Q5_1, Q5_K and Q6_K are dequantized one
  tensor at a time and requantized per row (lossy: their block scales do not survive; the loss is measured in
  tests/test_quantized.py).
Quantizing a 16-bit checkpoint on the fly (`quantization: int4 | int8`) uses the same two formats.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch

from budget.gguf import INT4_GROUP as GROUP  # GGUF's Q4_0/Q4_1 block and Q4_K's sub-block: those repack exactly
from budget.gguf import INT8_TYPES


class QuantFormat(StrEnum):
    INT4 = "int4"
    INT8 = "int8"


@dataclass(slots=True)
class QuantizedTensor:
    """One [out, in] weight before packing; rows can be stacked (q/k/v, gate/up) and permuted (llama's rope)."""
    format: QuantFormat
    codes: torch.Tensor          # INT4: uint8 in 0..15; INT8: int8; [out, in]
    scales: torch.Tensor         # float32; INT4: [out, in / GROUP]; INT8: [out]
    zeros: torch.Tensor | None   # INT4 only: [out, in / GROUP]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)

    def rows(self, order: torch.Tensor) -> QuantizedTensor:
        zeros = None if self.zeros is None else self.zeros[order]
        return QuantizedTensor(self.format, self.codes[order], self.scales[order], zeros)

    def dequantize(self) -> torch.Tensor:
        """The float32 weight these codes stand for (the tests' oracle; a widening step for mixed stacks)."""
        if self.format == QuantFormat.INT8:
            return self.codes.float() * self.scales[:, None]
        scales = self.scales.repeat_interleave(GROUP, dim=1)
        return (self.codes.float() - 8) * scales + self.zeros.repeat_interleave(GROUP, dim=1)


def stack(parts: list[QuantizedTensor]) -> QuantizedTensor:
    """Parts stacked by rows; a mix of formats is widened to INT8 (an int4 grid requantized per row)."""
    if len({p.format for p in parts}) > 1:
        parts = [quantize(p.dequantize(), QuantFormat.INT8) if p.format == QuantFormat.INT4 else p for p in parts]
    zeros = None if parts[0].zeros is None else torch.cat([p.zeros for p in parts])
    return QuantizedTensor(parts[0].format, torch.cat([p.codes for p in parts]), torch.cat([p.scales for p in parts]),
                           zeros)


def quantize(weight: torch.Tensor, fmt: QuantFormat) -> QuantizedTensor:
    """Round-to-nearest weight-only quantization of one dense [out, in] weight (INT4: asymmetric per group)."""
    w = weight.float()
    if fmt == QuantFormat.INT8:
        scales = w.abs().amax(dim=1) / 127
        scales = torch.where(scales == 0, torch.ones_like(scales), scales)
        codes = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        return QuantizedTensor(fmt, codes, scales, None)
    out, cols = w.shape
    if cols % GROUP:
        raise ValueError(f"int4 needs the input size to be a multiple of {GROUP}; this weight has {cols}")
    groups = w.view(out, cols // GROUP, GROUP)
    low, high = groups.amin(dim=2), groups.amax(dim=2)
    scales = (high - low) / 15
    scales = torch.where(scales == 0, torch.ones_like(scales), scales)
    codes = torch.round((groups - low[..., None]) / scales[..., None]).clamp(0, 15).to(torch.uint8)
    return QuantizedTensor(fmt, codes.view(out, cols), scales, low + 8 * scales)


def from_gguf(data: np.ndarray, type_name: str, shape: tuple[int, int]) -> QuantizedTensor:
    """A GGUF tensor's blocks (uint8 rows as the gguf reader maps them) in our stored form, row by row."""
    out, cols = shape
    blocks = np.asarray(data, dtype=np.uint8).reshape(out, -1)
    if type_name in INT8_TYPES:
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        dense = dequantize(blocks, GGMLQuantizationType[type_name]).reshape(out, cols)
        return quantize(torch.from_numpy(np.ascontiguousarray(dense)), QuantFormat.INT8)
    if type_name == "Q4_K":
        codes, scales, zeros = _q4_k(blocks.reshape(-1, 144))
    else:
        per_block = 18 if type_name == "Q4_0" else 20
        b = blocks.reshape(-1, per_block)
        d = b[:, :2].copy().view(np.float16).astype(np.float32)[:, 0]
        minimum = b[:, 2:4].copy().view(np.float16).astype(np.float32)[:, 0] if type_name == "Q4_1" else None
        qs = b[:, per_block - 16:]
        codes = np.concatenate([qs & 0x0F, qs >> 4], axis=1)        # element j and j + 16 of each block
        scales = d
        zeros = np.zeros_like(d) if minimum is None else minimum + 8 * d  # (q - 8) * d + zero
    return QuantizedTensor(QuantFormat.INT4, torch.from_numpy(np.ascontiguousarray(codes).reshape(out, cols)),
                           torch.from_numpy(np.ascontiguousarray(scales, dtype=np.float32).reshape(out, -1)),
                           torch.from_numpy(np.ascontiguousarray(zeros, dtype=np.float32).reshape(out, -1)))


def _q4_k(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_K super-blocks (256 weights: 8 sub-blocks of 32 with 6-bit scales and mins) as 8 int4 groups each."""
    from gguf.quants import Q4_K

    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    sc, m = Q4_K.get_scale_min(blocks[:, 4:16].copy())
    scales = d * sc.astype(np.float32)                        # [blocks, 8]
    minimum = dmin * m.astype(np.float32)                     # w = q * scale - minimum
    qs = blocks[:, 16:].reshape(-1, 4, 32)                    # 4 chunks of 64 weights: low nibbles, then high
    codes = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(-1, 256)
    return codes, scales, 8 * scales - minimum
