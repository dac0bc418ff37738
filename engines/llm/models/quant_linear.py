"""Linear and embedding layers whose weights stay packed: a GGUF's own blocks, int4 groups, int8 or fp8 rows, never a
dense copy.

The decoder is built with nn.Linear; the loader swaps in these where the checkpoint (or `quantization:`) keeps a
weight quantized. The matmul is llm_kernels' for the device.
"""
from __future__ import annotations

import torch
from torch import nn

from engines.llm.models.quantization import GROUP, GGMLBlocks, QuantFormat, QuantizedTensor
from llm_kernels.dispatch import fp8_matmul, ggml_dequantize, ggml_matmul, int4_matmul, int8_matmul, pack_int4_for
from llm_kernels.reference import pack_int4, unpack_int4

SCALE_DTYPE = torch.bfloat16  # what torch's packed CPU kernels take with bfloat16 activations


class QuantLinear(nn.Module):
    def __init__(self, weight: QuantizedTensor | GGMLBlocks, bias: torch.Tensor | None, device: torch.device) -> None:
        super().__init__()
        self.format = weight.format
        self.out_features, self.in_features = weight.shape
        if isinstance(weight, GGMLBlocks):
            self.register_buffer("blocks", weight.data.to(device))
            self.segments = torch.tensor(weight.segments, dtype=torch.int64)  # metadata, not weights: no buffer
        elif weight.format == QuantFormat.INT4:
            self.register_buffer("packed", pack_int4_for(weight.codes, device))
            scales_zeros = torch.stack([weight.scales.t(), weight.zeros.t()], dim=-1)   # [K/GROUP, N, 2]
            self.register_buffer("scales_zeros", scales_zeros.to(device, SCALE_DTYPE).contiguous())
        else:  # fp8 keeps float32 scales: the fp8 matmul takes them so
            self.register_buffer("codes", weight.codes.to(device))
            scale_dtype = torch.float32 if weight.format == QuantFormat.FP8 else SCALE_DTYPE
            self.register_buffer("scales", weight.scales.to(device, scale_dtype))
        self.bias = None if bias is None else nn.Parameter(bias.to(device), requires_grad=False)
        self.input_order = None if weight.input_order is None else weight.input_order.to(device)  # GPTQ act-order

    @classmethod
    def sharing(cls, embedding: QuantEmbedding) -> QuantLinear:
        """The LM head of a model whose embeddings are tied: the same int8 rows or GGML blocks, not a second copy."""
        head = cls.__new__(cls)
        nn.Module.__init__(head)
        head.format, head.bias, head.input_order = embedding.format, None, None
        if embedding.format == QuantFormat.GGML:
            head.out_features, head.in_features = embedding.blocks.shape[0], embedding.cols
            head.register_buffer("blocks", embedding.blocks)
            head.segments = torch.tensor([[embedding.ggml_type, head.out_features]])
            return head
        head.out_features, head.in_features = embedding.codes.shape
        head.register_buffer("codes", embedding.codes)
        head.register_buffer("scales", embedding.scales)
        return head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_order is not None:
            x = x[..., self.input_order]
        if self.format == QuantFormat.GGML:
            out = ggml_matmul(x, self.blocks, self.segments)
        elif self.format == QuantFormat.INT4:
            out = int4_matmul(x, self.packed, self.scales_zeros, GROUP)
        elif self.format == QuantFormat.FP8:
            out = fp8_matmul(x, self.codes, self.scales)
        else:
            out = int8_matmul(x, self.codes, self.scales)
        return out if self.bias is None else out + self.bias.to(out.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, format={self.format}"


class QuantEmbedding(nn.Module):
    """Token embeddings as GGML blocks, int8 rows or int4 groups along each row: a lookup gathers only the rows asked
    for and dequantizes them (int4 codes stay two a byte in the reference layout, which any device can gather)."""

    def __init__(self, weight: QuantizedTensor | GGMLBlocks, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        if weight.format not in (QuantFormat.INT8, QuantFormat.INT4, QuantFormat.GGML):
            raise ValueError("embeddings are kept as GGML blocks, int8 rows or int4 groups (a lookup must read single "
                             "rows)")
        self.format, self.dtype = weight.format, dtype
        if isinstance(weight, GGMLBlocks):
            if len(weight.segments) != 1:
                raise ValueError("an embedding's GGML blocks are all of one type")
            self.ggml_type, self.cols = weight.segments[0][0], weight.cols
            self.register_buffer("blocks", weight.data.view(weight.shape[0], -1).to(device))
            return
        if weight.format == QuantFormat.INT4:
            self.register_buffer("nibbles", pack_int4(weight.codes).to(device))
            self.register_buffer("zeros", weight.zeros.to(device, SCALE_DTYPE))
        else:
            self.register_buffer("codes", weight.codes.to(device))
        self.register_buffer("scales", weight.scales.to(device, SCALE_DTYPE))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.format == QuantFormat.GGML:
            rows = ggml_dequantize(self.blocks[ids.reshape(-1)], self.ggml_type, self.cols)
            return rows.to(self.dtype).view(*ids.shape, self.cols)
        if self.format == QuantFormat.INT8:
            return self.codes[ids].to(self.dtype) * self.scales[ids, None].to(self.dtype)
        codes = unpack_int4(self.nibbles[ids]).to(self.dtype).unflatten(-1, (-1, GROUP))   # [tokens, groups, GROUP]
        rows = (codes - 8) * self.scales[ids, :, None].to(self.dtype) + self.zeros[ids, :, None].to(self.dtype)
        return rows.flatten(-2)
