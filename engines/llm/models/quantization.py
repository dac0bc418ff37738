"""Weight-only quantized tensors as the loader hands them to QuantLinear: integer codes plus their scales.

On the CPU a GGUF's weights stay as the file stores them:
- GGML: llama.cpp's blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K), multiplied as they are by
  llm_kernels/ggml_matmul.cpp; nothing is repacked, so the weights are exactly the file's and take its bytes.
Elsewhere (CUDA, or a CPU where the C++ kernels did not build), two stored formats, the two that torch's packed
kernels serve fast with bfloat16 activations and our Triton kernel serves on CUDA:
- INT4: codes 0..15 in groups of GROUP along the input, w = (q - 8) * scale + zero (torch's int4pack convention).
  GGUF Q4_0, Q4_1 and Q4_K are repacked into it code for code; only their fp16 scales become bfloat16.
- INT8: codes -127..127 with one scale per output row. GGUF Q8_0, Q5_0, Q5_1, Q5_K and Q6_K are dequantized one
  tensor at a time and requantized per row (lossy: their block scales do not survive; the loss is measured in
  tests/test_quantized.py).
Quantizing a 16-bit checkpoint on the fly (`quantization: int4 | int8`) uses the same two formats, and a third:
- FP8: float8 e4m3 codes with one float32 scale per output row (vLLM's `fp8`), for CUDA cards of compute capability
  8.9 or newer, whose fp8 matmul takes them as they are.
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
    FP8 = "fp8"
    GGML = "ggml"


FP8_MAX = 448.0  # the largest float8 e4m3 value


@dataclass(slots=True)
class QuantizedTensor:
    """One [out, in] weight before packing; rows can be stacked (q/k/v, gate/up) and permuted (llama's rope)."""
    format: QuantFormat
    codes: torch.Tensor          # INT4: uint8 in 0..15; INT8: int8; FP8: float8_e4m3fn; [out, in]
    scales: torch.Tensor         # float32; INT4: [out, in / GROUP]; INT8 and FP8: [out]
    zeros: torch.Tensor | None   # INT4 only: [out, in / GROUP]
    input_order: torch.Tensor | None = None  # GPTQ act-order: inputs gathered in this order make the groups contiguous

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)

    def rows(self, order: torch.Tensor) -> QuantizedTensor:
        zeros = None if self.zeros is None else self.zeros[order]
        return QuantizedTensor(self.format, self.codes[order], self.scales[order], zeros, self.input_order)

    def dequantize(self) -> torch.Tensor:
        """The float32 weight these codes stand for (the tests' oracle; a widening step for mixed stacks)."""
        if self.format != QuantFormat.INT4:
            return self.codes.float() * self.scales[:, None]
        scales = self.scales.repeat_interleave(GROUP, dim=1)
        weight = (self.codes.float() - 8) * scales + self.zeros.repeat_interleave(GROUP, dim=1)
        if self.input_order is None:
            return weight
        return torch.empty_like(weight).index_copy_(1, self.input_order, weight)  # column i was input order[i]


@dataclass(slots=True)
class GGMLBlocks:
    """One [out, in] weight as a GGUF stores it: each row's llama.cpp blocks, in segments of one type each (q/k/v
    stacked from tensors of different types: Q4_K_M files keep some v in Q8_0 beside q and k in Q5_0)."""
    data: torch.Tensor                # uint8: every row's bytes, in order
    segments: list[tuple[int, int]]   # (GGML type, rows)
    cols: int
    input_order = None                # never act-order: read like a QuantizedTensor

    @property
    def format(self) -> QuantFormat:
        return QuantFormat.GGML

    @property
    def shape(self) -> tuple[int, int]:
        return sum(rows for _, rows in self.segments), self.cols

    def rows(self, order: torch.Tensor) -> GGMLBlocks:
        if len(self.segments) != 1:
            raise ValueError("only a weight of one type is reordered by rows")
        return GGMLBlocks(self.data.view(self.shape[0], -1)[order].reshape(-1), self.segments, self.cols)


def stack(parts: list[QuantizedTensor | GGMLBlocks]) -> QuantizedTensor | GGMLBlocks:
    """Parts stacked by rows; a mix of formats, or of act-order input orders, is widened to INT8 (requantized per
    row from the exact weights)."""
    if all(isinstance(p, GGMLBlocks) for p in parts):
        segments = [segment for p in parts for segment in p.segments]
        return GGMLBlocks(torch.cat([p.data for p in parts]), _merged(segments), parts[0].cols)
    orders = [p.input_order for p in parts]
    same_order = all(o is None for o in orders) or all(o is not None and torch.equal(o, orders[0]) for o in orders)
    if len({p.format for p in parts}) > 1 or not same_order:
        parts = [p if p.format == QuantFormat.INT8 else quantize(p.dequantize(), QuantFormat.INT8) for p in parts]
    zeros = None if parts[0].zeros is None else torch.cat([p.zeros for p in parts])
    return QuantizedTensor(parts[0].format, torch.cat([p.codes for p in parts]), torch.cat([p.scales for p in parts]),
                           zeros, parts[0].input_order)


def _merged(segments: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Neighbouring segments of one type as one."""
    merged: list[tuple[int, int]] = []
    for kind, rows in segments:
        if merged and merged[-1][0] == kind:
            merged[-1] = (kind, merged[-1][1] + rows)
        else:
            merged.append((kind, rows))
    return merged


def quantize(weight: torch.Tensor, fmt: QuantFormat) -> QuantizedTensor:
    """Round-to-nearest weight-only quantization of one dense [out, in] weight (INT4: asymmetric per group)."""
    w = weight.float()
    if fmt == QuantFormat.FP8:
        scales = w.abs().amax(dim=1) / FP8_MAX
        scales = torch.where(scales == 0, torch.ones_like(scales), scales)
        return QuantizedTensor(fmt, (w / scales[:, None]).to(torch.float8_e4m3fn), scales, None)
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


def from_gguf(data: np.ndarray, type_name: str, shape: tuple[int, int], as_stored: bool = False
              ) -> QuantizedTensor | GGMLBlocks:
    """A GGUF tensor's blocks (uint8 rows as the gguf reader maps them) as they are (`as_stored`, a copy: the file's
    mapping is closed after the load) or repacked into INT4 or INT8, row by row."""
    out, cols = shape
    if as_stored:
        from gguf import GGMLQuantizationType

        data = torch.from_numpy(np.array(data, dtype=np.uint8).reshape(-1))
        return GGMLBlocks(data, [(GGMLQuantizationType[type_name].value, out)], cols)
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


AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AutoAWQ's GEMM packing: nibble i of each int32 holds column 8j + AWQ_ORDER[i]


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """int32 [..., M] -> uint8 [..., M, 8]: nibble i (bits 4i..4i+3) of each word."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32)
    return ((packed.to(torch.int32)[..., None] >> shifts) & 0xF).to(torch.uint8)


def from_awq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group: int) -> QuantizedTensor:
    """AutoAWQ GEMM: qweight int32 [in, out/8] and qzeros int32 [in/group, out/8] packed along the outputs in
    AWQ_ORDER, scales [in/group, out]; w = (q - zero) · scale."""
    def unpack(packed: torch.Tensor) -> torch.Tensor:
        nib = _nibbles(packed)                                    # [rows, out/8, 8]: nibble i
        cols = torch.empty_like(nib)
        cols[..., list(AWQ_ORDER)] = nib                          # column AWQ_ORDER[i] gets nibble i
        return cols.flatten(-2)                                   # [rows, out]
    return _int4_groups(unpack(qweight).t(), unpack(qzeros).t(), scales.t().float(), group, None)


def from_gptq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, g_idx: torch.Tensor | None,
              group: int, zero_offset: int) -> QuantizedTensor:
    """GPTQ: qweight int32 [in/8, out] packed along the inputs in order, qzeros int32 [groups, out/8] packed along the
    outputs, scales [groups, out], g_idx [in] the group of each input (act-order: not in order);
    w = (q - zero) · scale, the stored zero one less than the real one in the original (v1) format (zero_offset 1)."""
    codes = _nibbles(qweight).permute(0, 2, 1).reshape(-1, qweight.shape[1]).t()      # [out, in]
    zeros = (_nibbles(qzeros).flatten(-2).to(torch.int32) + zero_offset).t()         # [out, groups]
    inputs = codes.shape[1]
    g_idx = torch.arange(inputs) // group if g_idx is None else g_idx.long()
    order = None
    if not torch.equal(g_idx, torch.arange(inputs) // group):  # act-order: sort the inputs by group
        order = torch.argsort(g_idx, stable=True)
        if not torch.equal(g_idx[order], torch.arange(inputs) // group):
            raise ValueError("g_idx does not give every group the same number of inputs; this GPTQ file is not one "
                             "this engine reads")
        codes = codes[:, order]
    return _int4_groups(codes, zeros, scales.t().float(), group, order)


def _int4_groups(codes: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor, group: int,
                 order: torch.Tensor | None) -> QuantizedTensor:
    """Codes [out, in] with a zero and scale per `group` inputs, as our groups of GROUP (each a copy of its group's):
    (q - z) · s = (q - 8) · s + (8 - z) · s."""
    if group % GROUP:
        raise ValueError(f"group_size {group} is not a multiple of {GROUP}")
    repeat = group // GROUP
    scales = scales.repeat_interleave(repeat, dim=1)
    zeros = (8 - zeros.float()).repeat_interleave(repeat, dim=1) * scales
    return QuantizedTensor(QuantFormat.INT4, codes.contiguous(), scales, zeros, order)
