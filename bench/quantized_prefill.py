"""A prompt's prefill on packed GGUF weights: multiplied as packed against widening the weights a slice at a time and
multiplying in float32, by prompt length, in one run.

It picks `budget.gguf.DEQUANTIZE_FROM_ROWS`, the step size from which the engine widens each format (as
vLLM's AWQ layer does past 256 tokens on a GPU). With the C++ CPU kernels built, both demo files are held in their
own GGML blocks ("packed": multiplied straight from the blocks with AVX512-BF16); without them (`--repacked`) as int4
groups and int8 rows ("packed": torch's bfloat16 kernels).
Each row times a one-token generation after a new prompt of N tokens (the time to first token: the prefill, then
one row through the LM head) on the served model, both ways, best of --repeats, and prints the widened path's time
over the packed one's.

    .venv/bin/python bench/quantized_prefill.py [--gguf FILE ...] [--tokens 8 16 32 ...] [--repacked]
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from hardware import describe
from rich.console import Console
from rich.table import Table

from budget.gguf import DEQUANTIZE_FROM_ROWS
from engines.llm import EngineConfig, LLMEngine, SamplingParams

ROOT = Path(__file__).resolve().parents[1]
DEMO = [ROOT / ".demo-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        ROOT / ".demo-models/real/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"]
PATHS = {"packed": 1 << 30, "widened float32": 1}   # DEQUANTIZE_FROM_ROWS for each path, every format


def first_token_ms(llm: LLMEngine, tokens: int, repeats: int, rng: random.Random) -> float:
    best = float("inf")
    for _ in range(repeats):
        prompt = [rng.randrange(1000, 20000) for _ in range(tokens)]   # a new prompt: no cached prefix to reuse
        started = time.perf_counter()
        llm.generate([prompt], SamplingParams(temperature=0, max_tokens=1, ignore_eos=True))
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", type=Path, nargs="+", default=DEMO)
    parser.add_argument("--tokens", type=int, nargs="+", default=[8, 16, 24, 32, 48, 64, 128, 256, 512, 1024])
    parser.add_argument("--repacked", action="store_true", help="hold int4/int8 as without the C++ kernels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="default bench/results/quantized_prefill[_repacked].json")
    args = parser.parse_args()
    if args.repacked:
        import engines.llm.models.loader as loader
        loader.extension = lambda: None
    args.out = args.out or ROOT / f"bench/results/quantized_prefill{'_repacked' if args.repacked else ''}.json"
    rows = []
    for gguf in args.gguf:
        llm = LLMEngine(EngineConfig(str(gguf), dtype="float32", max_model_len=max(args.tokens) + 16, max_num_seqs=4,
                                     num_kv_blocks=max(args.tokens) // 16 + 64,
                                     max_num_batched_tokens=max(args.tokens)))
        rng = random.Random(0)
        first_token_ms(llm, 8, 1, rng)   # warm-up
        for tokens in args.tokens:
            row = {"model": gguf.name, "tokens": tokens}
            for name, rows_from in PATHS.items():
                DEQUANTIZE_FROM_ROWS.update(dict.fromkeys(DEQUANTIZE_FROM_ROWS, rows_from))
                row[name] = first_token_ms(llm, tokens, args.repeats, rng)
            row["widened / packed"] = row["widened float32"] / row["packed"]
            rows.append(row)
        del llm
    table = Table(title=f"time to first token, ms, float32 model on packed weights "
                        f"({'int4/int8 repacked' if args.repacked else 'GGML blocks'}; {describe()})")
    for column in ("model", "prompt tokens", *PATHS, "widened / packed"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(r["model"], str(r["tokens"]), *(f"{r[name]:.0f}" for name in PATHS),
                      f"{r['widened / packed']:.2f}")
    Console().print(table)
    held = "int4/int8 repacked" if args.repacked else "GGML blocks"
    args.out.write_text(json.dumps({"hardware": describe(), "held": held, "repeats": args.repeats, "rows": rows},
                                   indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
