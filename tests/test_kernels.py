"""Each Triton kernel equals its PyTorch reference, and the reference equals plain dense attention.

On a CPU-only machine the Triton kernels run under TRITON_INTERPRET=1 (set in conftest); on a GPU natively.
"""
from __future__ import annotations

import math
import random

import pytest
import torch

from llm_kernels.reference import paged_attention_reference, store_kv_reference
from llm_kernels.triton_paged_attention import paged_attention_triton
from llm_kernels.triton_store_kv import store_kv_triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32] + ([torch.bfloat16] if DEVICE == "cuda" else [])  # interpreter bf16 maths is wrong
TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 1e-2}


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def make_batch(rng: random.Random, q_lens: list[int], ctx_lens: list[int], heads: int, kv_heads: int,
               head_dim: int, block_size: int, dtype: torch.dtype):
    """A paged pool holding each sequence's context in shuffled blocks, and the step's new queries."""
    tables = [(n + block_size - 1) // block_size for n in ctx_lens]
    pool_blocks = sum(tables) + 3
    order = list(range(pool_blocks))
    rng.shuffle(order)
    width = max(tables)
    block_tables = torch.zeros(len(ctx_lens), width, dtype=torch.int32)
    used = 0
    for i, n in enumerate(tables):
        block_tables[i, :n] = torch.tensor(order[used:used + n])
        used += n
    k_cache = torch.randn(pool_blocks, block_size, kv_heads, head_dim, dtype=dtype)
    v_cache = torch.randn(pool_blocks, block_size, kv_heads, head_dim, dtype=dtype)
    q = torch.randn(sum(q_lens), heads, head_dim, dtype=dtype)
    cu = torch.tensor([0] + list(torch.tensor(q_lens).cumsum(0)), dtype=torch.int32)
    lens = torch.tensor(ctx_lens, dtype=torch.int32)
    on = lambda t: t.to(DEVICE)  # noqa: E731
    return on(q), on(k_cache), on(v_cache), on(cu), on(lens), on(block_tables)


def dense_attention(q, k_cache, v_cache, cu, lens, tables, scale):
    """Textbook attention, one sequence and one head at a time, reading the pool token by token."""
    out = torch.empty_like(q, dtype=torch.float32)
    block_size, group = k_cache.shape[1], q.shape[1] // k_cache.shape[2]
    for s in range(len(lens)):
        start, end, length = int(cu[s]), int(cu[s + 1]), int(lens[s])
        slots = [(int(tables[s, p // block_size]), p % block_size) for p in range(length)]
        k = torch.stack([k_cache[b, o] for b, o in slots]).float()
        v = torch.stack([v_cache[b, o] for b, o in slots]).float()
        for t in range(end - start):
            pos = length - (end - start) + t
            for h in range(q.shape[1]):
                scores = (k[: pos + 1, h // group] @ q[start + t, h].float()) * scale
                out[start + t, h] = scores.softmax(0) @ v[: pos + 1, h // group]
    return out


CASES = [  # (q_lens, ctx_lens, heads, kv_heads, head_dim, block_size)
    ([1, 1, 1], [5, 17, 40], 4, 4, 16, 16),
    ([7, 1, 20], [7, 33, 52], 8, 2, 32, 16),
    ([3, 16, 1, 40], [19, 16, 64, 90], 14, 2, 24, 16),
    ([1, 65], [100, 130], 4, 1, 64, 32),
]


@pytest.mark.parametrize("case", CASES)
def test_reference_equals_dense_attention(case):
    q_lens, ctx_lens, heads, kv_heads, head_dim, block_size = case
    batch = make_batch(random.Random(0), q_lens, ctx_lens, heads, kv_heads, head_dim, block_size, torch.float32)
    scale = 1 / math.sqrt(head_dim)
    got = paged_attention_reference(*batch, scale, max(q_lens))
    assert relative_error(got, dense_attention(*batch, scale)) < 1e-5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_triton_attention_equals_reference(case, dtype):
    q_lens, ctx_lens, heads, kv_heads, head_dim, block_size = case
    batch = make_batch(random.Random(1), q_lens, ctx_lens, heads, kv_heads, head_dim, block_size, dtype)
    scale = 1 / math.sqrt(head_dim)
    want = paged_attention_reference(*batch, scale, max(q_lens))
    got = paged_attention_triton(*batch, scale, max(q_lens))
    assert relative_error(got, want) < TOLERANCE[dtype]


def test_triton_attention_reads_fp8_pool():
    q, k_cache, v_cache, *rest = make_batch(random.Random(2), [1, 9], [30, 41], 8, 2, 32, 16, torch.float32)
    k8, v8 = k_cache.to(torch.float8_e4m3fn), v_cache.to(torch.float8_e4m3fn)
    want = paged_attention_reference(q, k8, v8, *rest, 0.2, 9)
    assert relative_error(want, paged_attention_reference(q, k_cache, v_cache, *rest, 0.2, 9)) < 0.1
    assert relative_error(paged_attention_triton(q, k8, v8, *rest, 0.2, 9), want) < 1e-3


def test_triton_attention_random_shapes():
    rng = random.Random(7)
    for _ in range(4):
        kv_heads = rng.choice([1, 2])
        heads = kv_heads * rng.choice([1, 2, 3, 4])
        n = rng.randint(1, 4)
        ctx = [rng.randint(1, 70) for _ in range(n)]
        q_lens = [rng.choice([1, rng.randint(1, c)]) for c in ctx]
        batch = make_batch(rng, q_lens, ctx, heads, kv_heads, 16, 16, torch.float32)
        want = paged_attention_reference(*batch, 0.25, max(q_lens))
        assert relative_error(paged_attention_triton(*batch, 0.25, max(q_lens)), want) < 1e-3


FP8_STORE = pytest.param(torch.float8_e4m3fn, marks=pytest.mark.skipif(
    DEVICE == "cpu", reason="the Triton interpreter rounds fp32->fp8 wrongly across powers of two (1.99 -> 1.0)"))


@pytest.mark.parametrize("cache_dtype", [torch.float32, FP8_STORE])
def test_store_kv_triton_equals_reference(cache_dtype):
    tokens, kv_heads, head_dim, blocks, block_size = 10, 2, 24, 6, 16
    qkv = torch.randn(tokens, 4 + 2 * kv_heads, head_dim, device=DEVICE)
    k, v = qkv[:, 4:4 + kv_heads], qkv[:, 4 + kv_heads:]  # strided views, as the model hands them over
    slots = torch.tensor(random.Random(3).sample(range(blocks * block_size), tokens), device=DEVICE)
    slots[4] = -1
    caches = [torch.zeros(blocks, block_size, kv_heads, head_dim, device=DEVICE).to(cache_dtype) for _ in range(4)]
    store_kv_reference(k, v, caches[0], caches[1], slots)
    store_kv_triton(k, v, caches[2], caches[3], slots)
    for ref, tri in ((caches[0].float(), caches[2].float()), (caches[1].float(), caches[3].float())):
        if cache_dtype == torch.float32:
            assert torch.equal(ref, tri)
        else:  # e4m3 has 3 mantissa bits: rounding may differ by one step on ties
            assert ((ref - tri).abs() <= ref.abs() * 0.125 + 2 ** -9).all()
    flat = caches[0].view(-1, kv_heads, head_dim).float()
    assert torch.equal(flat[slots[0]], k[0].to(cache_dtype).float())
    assert flat.abs().sum() > 0 and torch.count_nonzero(flat.abs().sum((1, 2))) == tokens - 1


def test_stale_non_finite_tail_of_a_reused_block_is_never_read():
    """Failed before the fix: K/V loads were masked by head dim only, so NaN left past the context in a reused
    block reached the output (0 x NaN in p @ V)."""
    q_lens, ctx = [1, 5, 1], [5, 21, 40]
    q, k_cache, v_cache, cu, lens, tables = make_batch(random.Random(4), q_lens, ctx, 4, 2, 16, 16, torch.float32)
    want = paged_attention_reference(q, k_cache, v_cache, cu, lens, tables, 0.25, 5)
    for s, n in enumerate(ctx):
        block = int(tables[s, (n - 1) // 16])
        k_cache[block, n % 16:], v_cache[block, n % 16:] = float("inf"), float("nan")
    got = paged_attention_triton(q, k_cache, v_cache, cu, lens, tables, 0.25, 5)
    assert torch.isfinite(got).all()
    assert relative_error(got, want) < 1e-3
    assert relative_error(paged_attention_reference(q, k_cache, v_cache, cu, lens, tables, 0.25, 5), want) < 1e-6


def compiled_variant(kernel, args: tuple, constants: dict) -> tuple:
    """The key Triton compiles a kernel under for these arguments (dtypes, alignments, specialised integers)."""
    from triton.backends.compiler import BaseBackend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    if not isinstance(kernel, JITFunction):  # the interpreter's wrapper keeps the function and jit's options
        kernel = JITFunction(kernel.fn, do_not_specialize=kernel.kwargs.get("do_not_specialize"))
    bind = create_function_from_signature(kernel.signature, kernel.params, BaseBackend)
    return tuple(bind(*args, **constants)[1])


def test_serving_steps_compile_each_kernel_once_for_decode_and_once_for_prefill():
    """Failed before the fix: int64 metadata sliced from one tensor (alignment set by the batch's shape) and the
    block table's width specialised gave 6 attention variants over these steps (3 with either fixed alone), each a
    mid-serving compile on a GPU. Now: prefill, split decode and its reduce, whatever the batch and split count."""
    from engines.llm.input_batch import build_inputs
    from engines.llm.scheduler import SchedulerOutput
    from engines.llm.sampling_params import SamplingParams
    from engines.llm.sequence import Sequence
    from llm_kernels import triton_paged_attention, triton_store_kv

    rng = random.Random(5)
    qkv = torch.zeros(256, 4 + 2 * 2, 16)
    q, k, v = qkv[:, :4], qkv[:, 4:6], qkv[:, 6:]
    cache = torch.zeros(2, 3, 64, 16, 2, 16)
    attention, store = set(), set()
    for step in range(24):
        seqs, counts = [], []
        for _ in range(rng.randint(1, 9)):
            length = rng.randint(2, 200)
            new = 1 if step % 2 else rng.randint(1, min(length, 40))  # decode steps, then mixed prefill steps
            seq = Sequence("r", list(range(length)), SamplingParams(),
                           block_table=rng.sample(range(64), -(-length // 16)))
            seq.num_computed_tokens = length - new
            seqs.append(seq)
            counts.append(new)
        inputs = build_inputs(SchedulerOutput(seqs, counts), 16, torch.device("cpu"))
        ctx, n = inputs.context, len(inputs.input_ids)
        out = torch.empty_like(q[:n])
        for kernel, _, args, constants in triton_paged_attention.launches(
                q[:n], cache[0, 1], cache[1, 1], out, ctx.cu_seqlens_q, ctx.seq_lens, ctx.block_tables, 0.25,
                ctx.max_seqlen_q):
            attention.add((kernel.__name__, compiled_variant(kernel, args, constants)))
        store.add(compiled_variant(triton_store_kv._store_kv_kernel, *triton_store_kv.launch_arguments(
            k[:n], v[:n], cache[0, 1], cache[1, 1], ctx.slot_mapping)[1:]))
    assert sorted(name for name, _ in attention) == ["_paged_attention_kernel"] * 2 + ["_reduce_splits_kernel"]
    assert len(store) == 1


@pytest.mark.parametrize("splits", [2, 3, 16])
def test_split_kv_decode_equals_reference(splits):
    """Flash-decoding: each sequence's pages shared among `splits` programs, then reduced; short contexts leave some
    splits empty, and a reused block's NaN tail stays unread."""
    ctx = [1, 5, 17, 40, 200]
    q, k_cache, v_cache, cu, lens, tables = make_batch(random.Random(8), [1] * len(ctx), ctx, 8, 2, 24, 16,
                                                       torch.float32)
    want = paged_attention_reference(q, k_cache, v_cache, cu, lens, tables, 0.2, 1)
    for s, n in enumerate(ctx):
        k_cache[int(tables[s, (n - 1) // 16]), n % 16:] = float("nan")
    got = paged_attention_triton(q, k_cache, v_cache, cu, lens, tables, 0.2, 1, num_splits=splits)
    assert relative_error(got, want) < 1e-4


def test_decode_splits_fill_the_card_only_when_the_grid_is_small():
    from llm_kernels.triton_paged_attention import MAX_SPLITS, decode_splits

    cpu = torch.device("cpu")  # planned as a 132-SM card
    assert decode_splits(8, cpu) == MAX_SPLITS       # Qwen3-8B at batch 1: 8 KV heads
    assert decode_splits(64, cpu) == 4
    assert decode_splits(256, cpu) == 1              # batch 32 fills the card alone
