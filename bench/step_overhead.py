"""Engine overhead per step with the model replaced by a no-op: scheduler, block manager, input preparation.

Runs N sequences (prompt 128 tokens, prefix caching on) into steady decode, then times 300 decode
steps split into their parts. Goal: under 1 ms per step at 256 running sequences.

    .venv/bin/python bench/step_overhead.py [--sizes 1 64 256] [--json bench/results/step_overhead.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

import torch
from hardware import describe
from rich.console import Console
from rich.table import Table

from engines.llm.block_manager import BlockManager
from engines.llm.input_batch import build_inputs
from engines.llm.sampling_params import SamplingParams
from engines.llm.scheduler import Scheduler
from engines.llm.sequence import Sequence

BLOCK, PROMPT, STEPS = 16, 128, 300


def measure(num_seqs: int) -> dict:
    rng = random.Random(0)
    bm = BlockManager(num_seqs * (PROMPT + STEPS + 100) // BLOCK + 8, BLOCK)
    scheduler = Scheduler(bm, max_num_seqs=num_seqs, max_num_batched_tokens=max(2048, num_seqs))
    for i in range(num_seqs):
        scheduler.add(Sequence(f"r{i}", [rng.randrange(32000) for _ in range(PROMPT)],
                               SamplingParams(max_tokens=10**6, ignore_eos=True)))
    device = torch.device("cpu")
    parts = {"schedule": 0.0, "prepare inputs": 0.0, "update": 0.0}

    def step(timed: bool) -> None:
        t0 = time.perf_counter()
        batch = scheduler.schedule()
        t1 = time.perf_counter()
        build_inputs(batch, BLOCK, device)
        t2 = time.perf_counter()
        for seq, n in zip(batch.seqs, batch.num_new_tokens):  # what LLMEngine.step does around the model
            seq.num_computed_tokens += n
            bm.commit(seq)
            if seq.num_computed_tokens == seq.num_tokens:
                seq.token_ids.append(7)
        t3 = time.perf_counter()
        if timed:
            parts["schedule"] += t1 - t0
            parts["prepare inputs"] += t2 - t1
            parts["update"] += t3 - t2

    while any(s.num_computed_tokens < s.num_prompt_tokens for s in scheduler.running) or scheduler.num_waiting:
        step(timed=False)
    for _ in range(STEPS):
        step(timed=True)
    ms = {k: v / STEPS * 1e3 for k, v in parts.items()}
    ms["total"] = sum(ms.values())
    return {"running_seqs": num_seqs, **{f"{k} ms": round(v, 4) for k, v in ms.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--json", type=Path, default=Path("bench/results/step_overhead.json"))
    args = parser.parse_args()
    rows = [measure(n) for n in args.sizes]
    table = Table(title=f"engine overhead per decode step (no model), {describe()}")
    for key in rows[0]:
        table.add_column(key, justify="right")
    for row in rows:
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()))
    Console().print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"cpu": describe(), "python": platform.python_version(), "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
