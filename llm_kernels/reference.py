"""Plain-PyTorch twins of the Triton kernels: same signatures, used off CUDA and as the test oracle."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def store_kv_reference(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                       slot_mapping: torch.Tensor) -> None:
    """Write each token's K/V ([T, kv_heads, head_dim]) into its slot of the paged pool; slot -1 is padding."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep]
    k_cache.view(-1, *k_cache.shape[2:])[slots] = k[keep].to(k_cache.dtype)
    v_cache.view(-1, *v_cache.shape[2:])[slots] = v[keep].to(v_cache.dtype)


def _gather_context(cache: torch.Tensor, block_table: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
    """The first `length` cached tokens of one sequence as [kv_heads, length, head_dim]."""
    block_size = cache.shape[1]
    blocks = block_table[: (length + block_size - 1) // block_size]
    return cache[blocks].flatten(0, 1)[:length].to(dtype).transpose(0, 1)


def paged_attention_reference(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                              cu_seqlens_q: torch.Tensor, seq_lens: torch.Tensor, block_tables: torch.Tensor,
                              scale: float, max_seqlen_q: int) -> torch.Tensor:
    """Causal attention of each sequence's new queries over its whole paged context (cached prefix + new tokens).

    q is [T, heads, head_dim] with sequences laid end to end (cu_seqlens_q); the pool is
    [blocks, block_size, kv_heads, head_dim]; seq_lens counts each sequence's tokens including the new ones.
    Single-token queries (decodes) run as one padded batch; prefill chunks run one by one.
    """
    out = torch.empty_like(q)
    q_lens = (cu_seqlens_q[1:] - cu_seqlens_q[:-1]).tolist()
    starts, lens = cu_seqlens_q[:-1].tolist(), seq_lens.tolist()
    decodes = [i for i, n in enumerate(q_lens) if n == 1]
    if decodes:
        _decode_batch(q, k_cache, v_cache, block_tables, decodes, starts, lens, scale, out)
    for i, n in enumerate(q_lens):
        if n <= 1:
            continue
        s, length = starts[i], lens[i]
        k = _gather_context(k_cache, block_tables[i], length, q.dtype)
        v = _gather_context(v_cache, block_tables[i], length, q.dtype)
        mask = torch.ones(n, length, dtype=torch.bool, device=q.device).tril(diagonal=length - n)
        o = F.scaled_dot_product_attention(q[s:s + n].transpose(0, 1), k, v, attn_mask=mask, scale=scale,
                                           enable_gqa=True)
        out[s:s + n] = o.transpose(0, 1)
    return out


def _decode_batch(q, k_cache, v_cache, block_tables, rows, starts, lens, scale, out) -> None:
    """One query per sequence: gather every context into a padded batch and attend once."""
    block_size = k_cache.shape[1]
    longest = max(lens[i] for i in rows)
    index = torch.tensor(rows, device=q.device)
    tables = block_tables[index, : (longest + block_size - 1) // block_size]
    k = k_cache[tables].flatten(1, 2)[:, :longest].to(q.dtype).transpose(1, 2)
    v = v_cache[tables].flatten(1, 2)[:, :longest].to(q.dtype).transpose(1, 2)
    lengths = torch.tensor([lens[i] for i in rows], device=q.device)
    mask = (torch.arange(longest, device=q.device)[None, :] < lengths[:, None])[:, None, None, :]
    q_rows = q[torch.tensor([starts[i] for i in rows], device=q.device)].unsqueeze(2)
    o = F.scaled_dot_product_attention(q_rows, k, v, attn_mask=mask, scale=scale, enable_gqa=True)
    out[index.new_tensor([starts[i] for i in rows])] = o.squeeze(2)
