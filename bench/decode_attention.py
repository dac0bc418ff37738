"""Decode attention alone, one sequence, Qwen3-8B's shape (32 query heads, 8 KV heads, head_dim 128, bf16): one
program per (sequence, KV head) against split-KV (flash-decoding), at 4k and 32k tokens of context. Reports µs a call
and the KV bytes read per second, the bound a decode step's attention can reach.

    python bench/decode_attention.py [--contexts 4096 32768] [--json FILE]    # on a CUDA GPU
    TRITON_INTERPRET=1 python bench/decode_attention.py --smoke               # here: tiny shapes, runs at all
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from hardware import describe

from llm_kernels.reference import paged_attention_reference
from llm_kernels.triton_paged_attention import decode_splits, paged_attention_triton

HEADS, KV_HEADS, HEAD_DIM, PAGE = 32, 8, 128, 16


def batch(context: int, device: str, dtype: torch.dtype):
    """One decode query over `context` tokens laid out in shuffled pool blocks."""
    blocks = -(-context // PAGE)
    g = torch.Generator().manual_seed(0)
    k = torch.randn(blocks, PAGE, KV_HEADS, HEAD_DIM, generator=g).to(device, dtype)
    v = torch.randn(blocks, PAGE, KV_HEADS, HEAD_DIM, generator=g).to(device, dtype)
    q = torch.randn(1, HEADS, HEAD_DIM, generator=g).to(device, dtype)
    table = torch.randperm(blocks, generator=g).to(device, torch.int32)[None, :]
    cu = torch.tensor([0, 1], dtype=torch.int32, device=device)
    return q, k, v, cu, torch.tensor([context], dtype=torch.int32, device=device), table


def timed(fn, iterations: int, cuda: bool) -> float:
    """Seconds a call, after two untimed calls (compiles)."""
    fn(), fn()
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iterations):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000 / iterations
    t0 = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - t0) / iterations


def measure(context: int, device: str, dtype: torch.dtype, iterations: int) -> list[dict]:
    q, k, v, cu, lens, table = batch(context, device, dtype)
    scale = HEAD_DIM ** -0.5
    want = paged_attention_reference(q.float(), k.float(), v.float(), cu, lens, table, scale, 1)
    kv_bytes = 2 * context * KV_HEADS * HEAD_DIM * k.element_size()
    rows = []
    for splits in (1, decode_splits(KV_HEADS, q.device)):
        def call():
            return paged_attention_triton(q, k, v, cu, lens, table, scale, 1, num_splits=splits)
        error = ((call().float() - want).norm() / want.norm()).item()
        seconds = timed(call, iterations, device.startswith("cuda"))
        rows.append({"context": context, "splits": splits, "us": round(seconds * 1e6, 1),
                     "kv_gb_per_s": round(kv_bytes / seconds / 1e9, 1), "relative_error": error})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[4096, 32768])
    parser.add_argument("--smoke", action="store_true", help="tiny contexts in float32 (the interpreter's bf16 is wrong)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda and not args.smoke else torch.float32
    contexts = [40, 100] if args.smoke else args.contexts
    rows = [row for context in contexts for row in measure(context, device, dtype, 2 if args.smoke else 50)]
    for row in rows:
        print(f"context {row['context']:>6}  splits {row['splits']:>2}  {row['us']:>9.1f} µs  "
              f"{row['kv_gb_per_s']:>7.1f} GB/s of KV  error {row['relative_error']:.1e}")
    if args.json:
        record = {"device": describe(device), "dtype": str(dtype).removeprefix("torch."), "heads": HEADS,
                  "kv_heads": KV_HEADS, "head_dim": HEAD_DIM, "rows": rows}
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
