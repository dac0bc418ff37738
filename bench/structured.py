"""Structured outputs' cost: tokens/s with and without a JSON Schema, one stream and 16 at once, on the demo GGUF
models, and the per-step mask time (p50, p99) measured on the thread that fills it beside the forward pass.

Both sides generate exactly --tokens tokens a request (the schema asks for more than that, and the free side
ignores EOS), from the same chat prompts, greedy, in one engine, alternating sides over --rounds.

    .venv/bin/python bench/structured.py            # both demo models; writes bench/results/structured.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from hardware import describe
from rich.console import Console
from rich.table import Table

from engines.llm import EngineConfig, LLMEngine, SamplingParams
from engines.llm.sampling_params import StructuredOutputsParams

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"SmolLM2-135M Q4_1": ".demo-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
          "Qwen2.5-Coder-0.5B Q4_K_M": ".demo-models/real/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"}
SCHEMA = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 30},
    "days": {"type": "array", "minItems": 40, "maxItems": 60, "items": {
        "type": "object", "properties": {"day": {"type": "integer", "minimum": 1, "maximum": 31},
                                         "sky": {"enum": ["sunny", "cloudy", "rain", "snow"]},
                                         "high": {"type": "number", "minimum": -40, "maximum": 50}},
        "required": ["day", "sky", "high"], "additionalProperties": False}}},
    "required": ["city", "days"], "additionalProperties": False}
TOPICS = ["Paris", "Oslo", "Lima", "Cairo", "Tokyo", "Quito", "Perth", "Dakar"]


def prompts(engine: LLMEngine, n: int) -> list[list[int]]:
    tok = engine.tokenizer
    return [tok.encode(tok.apply_chat_template([{"role": "user", "content": f"The weather in {TOPICS[i % 8]} for "
                                                                             "the month, day by day, as JSON."}],
                                               tokenize=False, add_generation_prompt=True), add_special_tokens=False)
            for i in range(n)]


def run(engine: LLMEngine, batch: list[list[int]], tokens: int, constrained: bool) -> tuple[float, list[float]]:
    """(output tokens/s, the mask fill times of this run)."""
    spec = StructuredOutputsParams(json=json.dumps(SCHEMA)) if constrained else None
    params = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=not constrained, structured_outputs=spec)
    engine.runner.masks.fill_seconds.clear()
    start = time.perf_counter()
    outs = engine.generate(batch, params)
    seconds = time.perf_counter() - start
    assert all(len(o.token_ids) == tokens for o in outs), [len(o.token_ids) for o in outs]
    return sum(len(o.token_ids) for o in outs) / seconds, list(engine.runner.masks.fill_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench/results/structured.json"))
    args = parser.parse_args()
    rows = []
    for label, path in MODELS.items():
        engine = LLMEngine(EngineConfig(str(ROOT / path), num_kv_blocks=1024, max_model_len=2048, max_num_seqs=16))
        spec = StructuredOutputsParams(json=json.dumps(SCHEMA))
        engine.compile_grammar(SamplingParams(structured_outputs=spec)).result()  # compiled once, as in serving
        for streams in (1, 16):
            batch = prompts(engine, streams)
            run(engine, batch, 8, False), run(engine, batch, 8, True)  # warm both paths
            free, held, masks = [], [], []
            for _ in range(args.rounds):
                free.append(run(engine, batch, args.tokens, False)[0])
                rate, fills = run(engine, batch, args.tokens, True)
                held.append(rate)
                masks += fills
            masks.sort()
            row = {"model": label, "streams": streams, "free_tok_s": statistics.median(free),
                   "constrained_tok_s": statistics.median(held),
                   "ratio": statistics.median(held) / statistics.median(free),
                   "mask_p50_us": masks[len(masks) // 2] * 1e6, "mask_p99_us": masks[int(len(masks) * 0.99)] * 1e6,
                   "mask_steps": len(masks)}
            rows.append(row)
            print(row, flush=True)
        engine.close()
    table = Table(title=f"Structured outputs (JSON Schema) against free text, {args.tokens} tokens a request, greedy")
    for column in ("model", "streams", "free tok/s", "constrained tok/s", "ratio", "mask p50 µs", "mask p99 µs"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["model"], str(r["streams"]), f"{r['free_tok_s']:.1f}", f"{r['constrained_tok_s']:.1f}",
                      f"{r['ratio']:.2f}x", f"{r['mask_p50_us']:.0f}", f"{r['mask_p99_us']:.0f}")
    Console().print(table)
    Path(args.out).write_text(json.dumps({"machine": describe(), "tokens": args.tokens, "schema": SCHEMA,
                                          "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
