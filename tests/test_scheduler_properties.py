"""Random add / step / abort sequences keep the block manager and scheduler exact after every step.

No model runs here: a step does the engine's bookkeeping and appends a token drawn from a tiny
vocabulary, so prompts and outputs often share prefixes and the prefix cache is exercised.
"""
from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from engines.llm.block_manager import BlockManager
from engines.llm.sampling_params import SamplingParams
from engines.llm.scheduler import Scheduler
from engines.llm.requests import Priority
from engines.llm.sequence import Sequence, SequenceStatus

BLOCK = 16
BASES = [[random.Random(k).randrange(50) for _ in range(200)] for k in range(2)]  # shared prompt prefixes
add = st.tuples(st.just("add"), st.integers(0, 1), st.integers(1, 70), st.integers(1, 40),
                st.sampled_from(list(Priority)))
ops = st.lists(st.one_of(add, add, st.tuples(st.just("step")), st.tuples(st.just("abort"), st.integers(0, 1000))),
               min_size=10, max_size=80)


def check(scheduler: Scheduler, bm: BlockManager, live: dict[str, Sequence]) -> None:
    bm.check()
    owned = [b for s in scheduler.running for b in s.block_table]
    assert sum(bm.ref_counts) == len(owned) and bm.num_used == len(set(owned))
    assert len(scheduler.running) <= scheduler.max_num_seqs
    for seq in live.values():
        if seq.status is SequenceStatus.RUNNING:
            assert len(seq.block_table) * BLOCK >= seq.num_computed_tokens
        else:
            assert seq.status is SequenceStatus.WAITING and not seq.block_table and seq.num_computed_tokens == 0
    assert scheduler.num_waiting == sum(1 for s in live.values() if s.status is SequenceStatus.WAITING)


def step(scheduler: Scheduler, bm: BlockManager, live: dict[str, Sequence], rng: random.Random) -> None:
    running_before = list(scheduler.running)
    out = scheduler.schedule()
    assert out.total_tokens <= scheduler.max_num_batched_tokens and len(set(map(id, out.seqs))) == len(out)
    scheduled = set(map(id, out.seqs))
    for seq in running_before:  # a running sequence is served every step unless it was preempted
        assert id(seq) in scheduled or seq.status is SequenceStatus.WAITING
    for seq, n in zip(out.seqs, out.num_new_tokens):
        assert n >= 1 and len(seq.block_table) * BLOCK >= seq.num_computed_tokens + n
        seq.num_computed_tokens += n
        bm.commit(seq)
        if seq.num_computed_tokens == seq.num_tokens:
            seq.token_ids.append(seq.token_ids[-1] * 7 % 50)  # same prefix, same continuation
            if seq.num_output_tokens >= seq.params.max_tokens:
                scheduler.finish(seq, "length")
                del live[seq.request_id]


@settings(max_examples=150, deadline=None)
@given(ops, st.integers(5, 16), st.integers(1, 6), st.integers(0, 2**16), st.booleans())
def test_accounting_holds_after_every_operation(program, num_blocks, max_num_seqs, seed, prefix_caching):
    rng = random.Random(seed)
    bm = BlockManager(num_blocks, BLOCK, prefix_caching)
    scheduler = Scheduler(bm, max_num_seqs, max(max_num_seqs, 32))
    live: dict[str, Sequence] = {}
    ids = itertools.count()
    for op in program:
        if op[0] == "add":
            _, base, prompt_len, max_tokens, priority = op
            prompt_len = min(prompt_len, num_blocks * BLOCK - max_tokens - 1)
            if prompt_len < 1:
                continue
            prompt = BASES[base][:prompt_len] + [rng.randrange(50) for _ in range(rng.randrange(3))]
            seq = Sequence(f"r{next(ids)}", prompt[: num_blocks * BLOCK - max_tokens - 1],
                           SamplingParams(max_tokens=max_tokens), priority)
            live[seq.request_id] = seq
            scheduler.add(seq)
        elif op[0] == "abort" and live:
            seq = list(live.values())[op[1] % len(live)]
            scheduler.finish(seq, "abort")
            del live[seq.request_id]
            assert not seq.block_table
        else:
            step(scheduler, bm, live, rng)
        check(scheduler, bm, live)
    for _ in range(2000):  # everything left runs to the end
        if not scheduler.has_unfinished():
            break
        step(scheduler, bm, live, rng)
        check(scheduler, bm, live)
    assert not live and not scheduler.has_unfinished()
    assert bm.num_used == 0 and bm.num_free_blocks == num_blocks
