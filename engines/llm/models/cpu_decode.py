"""A pure decode step on the CPU as one C++ call over every layer (llm_kernels/cpu_decode.cpp), the CPU's stand-in
for CUDA graphs: the same arithmetic as DecoderLayer, without ~25 small ops and a Python frame per layer."""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import torch
from torch import nn

from budget.gguf import DEQUANTIZE_FROM_ROWS
from engines.llm.context import AttentionContext
from engines.llm.models.decoder import CausalLM
from engines.llm.models.quant_linear import QuantLinear
from engines.llm.models.quantization import GROUP, QuantFormat
from llm_kernels.cpu_extension import extension
from llm_kernels.dispatch import int4_on_cpu_kernel

NONE = torch.empty(0)   # an absent tensor (no q/k norm, no bias)


@dataclass(slots=True)
class CPUDecode:
    """Each layer's tensors in cpu_decode.cpp's order (4 norms, then weight, scales and bias of 4 projections)."""
    model: CausalLM
    kv_cache: torch.Tensor
    tensors: list[torch.Tensor]
    kinds: list[int]
    kernels: ModuleType

    @classmethod
    def build(cls, model: CausalLM, dtype: torch.dtype, kv_cache: torch.Tensor) -> CPUDecode | None:
        """The fused step for this model served in `dtype`, or None where it holds what the C++ does not run
        (16-bit or fp8 activations or KV, fp8 weights, GPTQ act-order) or the extension did not build."""
        if dtype != torch.float32 or kv_cache.dtype != torch.float32:
            return None
        kernels = extension()
        if kernels is None:
            return None
        tensors, kinds = [], []
        for layer in model.model.layers:
            attn = layer.self_attn
            tensors += [layer.input_layernorm.weight, layer.post_attention_layernorm.weight,
                        attn.q_norm.weight if attn.q_norm is not None else NONE,
                        attn.k_norm.weight if attn.k_norm is not None else NONE]
            for proj in (attn.qkv_proj, attn.o_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj):
                held = _projection(proj, kernels)
                if held is None:
                    return None
                tensors += held[:3]
                kinds.append(held[3])
        return cls(model, kv_cache, [t.detach() for t in tensors], kinds, kernels)

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        """The final-normed hidden states of a step whose every sequence has one new token."""
        decoder, attn = self.model.model, self.model.model.layers[0].self_attn
        x = decoder.embed_tokens(input_ids)
        cos, sin = (t.squeeze(1).contiguous() for t in decoder.rotary(positions, x.dtype))
        x = self.kernels.decode_layers(x, cos, sin, self.tensors, self.kinds, GROUP,
                                       DEQUANTIZE_FROM_ROWS["ggml"], self.kv_cache,
                                       context.block_tables, context.seq_lens, context.slot_mapping.long(),
                                       attn.num_heads, attn.num_kv_heads, attn.head_dim,
                                       decoder.layers[0].input_layernorm.eps, attn.scale)
        return decoder.norm(x)


def _projection(proj: nn.Module, kernels: ModuleType) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int] | None:
    """(weight, scales, bias, kind) of one projection as the C++ multiplies it, or None if it cannot."""
    if isinstance(proj, nn.Linear):
        if proj.weight.dtype != torch.float32:
            return None
        return proj.weight, NONE, NONE if proj.bias is None else proj.bias.float(), kernels.DENSE
    if not isinstance(proj, QuantLinear) or proj.input_order is not None:
        return None
    bias = NONE if proj.bias is None else proj.bias.float()
    if proj.format == QuantFormat.GGML:
        return proj.blocks, proj.segments, bias, kernels.GGML
    if proj.format == QuantFormat.INT4 and int4_on_cpu_kernel(proj.packed.device, proj.out_features):
        return proj.packed, proj.scales_zeros, bias, kernels.INT4
    if proj.format == QuantFormat.INT8:
        return proj.codes, proj.scales, bias, kernels.INT8
    return None
