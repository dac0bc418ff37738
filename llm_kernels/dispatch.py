"""Pick each kernel's implementation by device: Triton on CUDA, the PyTorch reference elsewhere; for the quantized
matmuls, torch's packed int4/int8 CPU kernels (bfloat16 activations: they are many times slower with float32 or
float16) on the CPU, our Triton int4 kernel on CUDA, the reference elsewhere.

A float32 CPU step of DEQUANTIZE_FROM_ROWS rows or more (budget/gguf.py, by format; a long prompt's prefill) instead
widens the packed weights a slice at a time and multiplies in float32, as vLLM's AWQ layer does past 256 tokens on a
GPU: with that many rows the dense matmul makes up for the widening, and float32 activations keep a prompt's logits
those of the dequantized model (the packed kernels round activations to bfloat16)."""
from __future__ import annotations

import torch

from budget.gguf import DEQUANTIZE_FROM_ROWS
from llm_kernels.reference import (ReferencePlan, int4_matmul_reference, pack_int4, paged_attention_reference,
                                   scaled_matmul_reference, store_kv_reference)


def store_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_mapping: torch.Tensor, plan: ReferencePlan | None = None) -> None:
    """Write the step's new K/V into the paged pool (off CUDA, at the plan's rows and slots when given)."""
    if k.is_cuda:
        from llm_kernels.triton_store_kv import store_kv_triton
        return store_kv_triton(k, v, k_cache, v_cache, slot_mapping)
    return store_kv_reference(k, v, k_cache, v_cache, slot_mapping, plan)


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cu_seqlens_q: torch.Tensor,
                    seq_lens: torch.Tensor, block_tables: torch.Tensor, scale: float,
                    max_seqlen_q: int, plan: ReferencePlan | None = None) -> torch.Tensor:
    """Causal attention of the step's new queries over each sequence's paged context."""
    if q.is_cuda:
        from llm_kernels.triton_paged_attention import paged_attention_triton
        return paged_attention_triton(q, k_cache, v_cache, cu_seqlens_q, seq_lens, block_tables, scale,
                                      max_seqlen_q)
    return paged_attention_reference(q, k_cache, v_cache, cu_seqlens_q, seq_lens, block_tables, scale,
                                     max_seqlen_q, plan)


CPU_INT4_BLOCK = 64   # torch's CPU int4 layout packs output rows in blocks of 64 (another layout for other sizes)


def int4_on_cpu_kernel(device: torch.device, out_features: int) -> bool:
    """Whether torch's packed int4 CPU kernel serves this weight: output rows in whole blocks of 64, the layout
    unpack_int4_cpu reads back (the kernel takes any multiple of 16, packed in layouts we do not read)."""
    return device.type == "cpu" and out_features % CPU_INT4_BLOCK == 0


def unpack_int4_cpu(packed: torch.Tensor) -> torch.Tensor:
    """[N, K/2] bytes in torch's CPU int4 layout -> [N, K] codes: per block of 64 rows, [K, 32] bytes whose low nibble
    is row j of the block and high nibble row 32 + j (tests/test_quantized.py checks it against torch's packing)."""
    blocks = packed.reshape(-1, packed.shape[1] * 2, CPU_INT4_BLOCK // 2)   # [N/64, K, 32]
    return torch.cat([blocks & 0x0F, blocks >> 4], dim=2).transpose(1, 2).reshape(packed.shape[0], -1)


def _dequantized(x: torch.Tensor, fmt: str) -> bool:
    """Whether this CPU step multiplies widened weights in float32 rather than the packed bfloat16 kernels."""
    return x.dtype == torch.float32 and x.numel() >= DEQUANTIZE_FROM_ROWS[fmt] * x.shape[-1]


def pack_int4_for(codes: torch.Tensor, device: torch.device) -> torch.Tensor:
    """[N, K] codes 0..15 in the layout int4_matmul reads on `device` (two codes a byte either way)."""
    if int4_on_cpu_kernel(device, codes.shape[0]):
        return torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1)
    return pack_int4(codes).to(device)


def int4_matmul(x: torch.Tensor, packed: torch.Tensor, scales_zeros: torch.Tensor, group: int) -> torch.Tensor:
    """x @ W.T for a group-wise int4 weight packed by pack_int4_for; scales_zeros is [K/group, N, 2]."""
    if int4_on_cpu_kernel(x.device, packed.shape[0]):
        if _dequantized(x, "int4"):
            return int4_matmul_reference(x, packed, scales_zeros, group, unpack_int4_cpu)
        rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, packed, group, scales_zeros)
        return out.to(x.dtype).view(*x.shape[:-1], -1)
    if x.is_cuda:
        from llm_kernels.triton_int4_matmul import int4_matmul_triton
        return int4_matmul_triton(x, packed, scales_zeros, group)
    return int4_matmul_reference(x, packed, scales_zeros, group)


def int8_matmul(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x @ W.T for an int8 weight with one scale per output row."""
    if x.device.type == "cpu" and not _dequantized(x, "int8"):
        out = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, x.shape[-1]).to(torch.bfloat16), codes, scales)
        return out.to(x.dtype).view(*x.shape[:-1], -1)
    return scaled_matmul_reference(x, codes, scales)


def ggml_matmul(x: torch.Tensor, blocks: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """x @ W.T for W in a GGUF's own blocks (CPU only: llm_kernels/ggml_matmul.cpp), in x's dtype; a step of
    DEQUANTIZE_FROM_ROWS["ggml"] rows or more widens them to float32."""
    from llm_kernels.cpu_extension import extension

    rows = x.reshape(-1, x.shape[-1]).float()
    out = extension().ggml_matmul(rows, blocks, segments, DEQUANTIZE_FROM_ROWS["ggml"])
    return out.to(x.dtype).view(*x.shape[:-1], -1)


def ggml_dequantize(rows: torch.Tensor, ggml_type: int, cols: int) -> torch.Tensor:
    """[R, row bytes] of one GGML type as float32 [R, cols]."""
    from llm_kernels.cpu_extension import extension

    return extension().ggml_dequantize(rows.contiguous(), ggml_type, cols)


def fp8_matmul_supported(device: torch.device) -> bool:
    """Whether this device multiplies float8 e4m3 directly: CUDA compute capability 8.9 (Ada) or newer."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def fp8_matmul(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x @ W.T for a float8 e4m3 weight with one float32 scale per output row: on a capable card the step's rows are
    quantized to fp8 with a scale each (dynamic, as vLLM's fp8) and multiplied by torch's fp8 matmul."""
    if not x.is_cuda:  # the loader refuses fp8 on a card below 8.9, so the step asks no more than this
        return scaled_matmul_reference(x, codes, scales)
    rows = x.reshape(-1, x.shape[-1])
    row_scales = (rows.abs().amax(dim=1, keepdim=True).float() / 448.0).clamp_min(1e-12)
    quantized = (rows.float() / row_scales).to(torch.float8_e4m3fn)
    out = torch._scaled_mm(quantized, codes.t(), scale_a=row_scales, scale_b=scales[None, :], out_dtype=x.dtype)
    return out.view(*x.shape[:-1], -1)
