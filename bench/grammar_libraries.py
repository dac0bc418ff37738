"""llguidance against xgrammar on our workload: a tool-call-sized JSON Schema on the demo models' tokenizers; the
tokenizer's one-time preparation, a grammar's compile, and the per-token mask (p50, max) over a real answer.

xgrammar is not a dependency (it brings torch, triton and apache-tvm-ffi pins of its own); to compare, install it
beside the lock for the run: `.venv/bin/pip install --no-deps xgrammar==0.2.9 apache-tvm-ffi==0.1.15.post2`.

    .venv/bin/python bench/grammar_libraries.py      # writes bench/results/grammar_libraries.json
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import llguidance
import llguidance.hf
import llguidance.torch
from hardware import describe
from rich.console import Console
from rich.table import Table

from engines.llm.sampling_params import JSON_STYLE
from engines.llm.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"SmolLM2-135M": ".demo-models/real/smollm2", "Qwen2.5-Coder-0.5B": ".demo-models/real/qwen2.5-coder-0.5b"}
SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer", "minimum": 0, "maximum": 150},
    "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    "kind": {"enum": ["cat", "dog", "bird"]},
    "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
                "required": ["city"]}}, "required": ["name", "age", "tags", "kind"]}
ANSWER = json.dumps({"name": "Rex the dog", "age": 7, "tags": ["good", "boy"], "kind": "dog",
                     "address": {"city": "Paris", "zip": "75001"}})


def ours(tok, ids: list[int]) -> dict:
    started = time.perf_counter()
    lexicon = llguidance.hf.from_tokenizer(tok)
    prepared = time.perf_counter() - started
    started = time.perf_counter()
    matcher = llguidance.LLMatcher(lexicon, llguidance.LLMatcher.grammar_from_json_schema(SCHEMA, overrides=JSON_STYLE))
    compiled = time.perf_counter() - started
    bitmask = llguidance.torch.allocate_token_bitmask(1, lexicon.vocab_size)
    masks = []
    for token in ids:
        started = time.perf_counter()
        llguidance.torch.fill_next_token_bitmask(matcher, bitmask, 0)
        masks.append(time.perf_counter() - started)
        assert matcher.consume_token(token), matcher.get_error()
    return {"prepare_ms": prepared * 1e3, "compile_ms": compiled * 1e3, "mask_p50_us": statistics.median(masks) * 1e6,
            "mask_max_us": max(masks) * 1e6}


def theirs(tok, ids: list[int]) -> dict:
    import xgrammar

    started = time.perf_counter()
    info = xgrammar.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
    compiler = xgrammar.GrammarCompiler(info)
    prepared = time.perf_counter() - started
    started = time.perf_counter()
    matcher = xgrammar.GrammarMatcher(compiler.compile_json_schema(json.dumps(SCHEMA), any_whitespace=False))
    compiled = time.perf_counter() - started
    bitmask = xgrammar.allocate_token_bitmask(1, info.vocab_size)
    masks = []
    for token in ids:
        started = time.perf_counter()
        matcher.fill_next_token_bitmask(bitmask, 0)
        masks.append(time.perf_counter() - started)
        assert matcher.accept_token(token)
    return {"prepare_ms": prepared * 1e3, "compile_ms": compiled * 1e3, "mask_p50_us": statistics.median(masks) * 1e6,
            "mask_max_us": max(masks) * 1e6}


def main() -> None:
    rows = []
    for label, folder in MODELS.items():
        tok = load_tokenizer(ROOT / folder)
        ids = tok.encode(ANSWER, add_special_tokens=False)
        for library, run in (("llguidance", ours), ("xgrammar", theirs)):
            try:
                rows.append({"model": label, "library": library, "vocab": len(tok), "tokens": len(ids), **run(tok, ids)})
            except ImportError:
                print(f"{library} is not installed: see this script's docstring")
    table = Table(title="Grammar libraries on our workload (a JSON Schema answer, token by token)")
    for column in ("model", "library", "prepare tokenizer ms", "compile ms", "mask p50 µs", "mask max µs"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["model"], r["library"], f"{r['prepare_ms']:.0f}", f"{r['compile_ms']:.1f}",
                      f"{r['mask_p50_us']:.0f}", f"{r['mask_max_us']:.0f}")
    Console().print(table)
    (ROOT / "bench/results/grammar_libraries.json").write_text(json.dumps({"machine": describe(), "rows": rows},
                                                                         indent=2) + "\n")


if __name__ == "__main__":
    main()
