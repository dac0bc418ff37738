"""Offline throughput: our engine against Hugging Face `generate` (static, padded batches) and transformers'
own continuous batching, in one run.

nano-vllm's workload shape scaled to the machine: N requests with input and output lengths uniform
in a range, `ignore_eos`, random token ids, on a random-weight Qwen3. Throughput counts the output
tokens the requests asked for, divided by wall time, for both. On CUDA it also measures single-stream
decode against the roofline (weight bytes / measured device copy bandwidth).

    .venv/bin/python bench/llm_throughput.py                      # CPU: ~58M-parameter Qwen3, fp32
    .venv/bin/python bench/llm_throughput.py --model-config configs/models/qwen3-8b/config.json \\
        --dtype bfloat16 --requests 256 --input 100 1024 --output 100 1024 --batch 256   # on a GPU
    .venv/bin/python bench/llm_throughput.py --gguf .demo-models/real/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

`--gguf FILE` serves a real GGUF instead: our engine with its quantized weights kept packed (decode steps through
the fused C++ layers, and again layer by layer in Python with enforce_eager), the same dequantized into --dtype,
and llama.cpp on the same file (llama-cpp-python, the engine inside Ollama, if it is installed:
`pip install llama-cpp-python` builds it), one stream and then 8 and 16 requests at once, the same chat prompts
greedy. llama.cpp runs first, so its resident growth is not memory our engines freed. llama-cpp-python's `Llama`
serves one sequence at a time, so its "concurrent" rows run the requests one after another, as an
Ollama slot does with OLLAMA_NUM_PARALLEL=1.
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from hardware import describe
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM, GenerationConfig, Qwen3Config

from engines.llm import EngineConfig, LLMEngine, SamplingParams

SMALL = dict(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
             num_key_value_heads=4, head_dim=64, max_position_embeddings=4096, tie_word_embeddings=False)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def random_checkpoint(folder: Path, config: dict, dtype: torch.dtype, device: str) -> torch.nn.Module:
    """Random weights with the given config, saved as safetensors; returns the transformers model too."""
    cfg = Qwen3Config(**{k: v for k, v in config.items() if k not in ("architectures", "model_type", "torch_dtype")})
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()
    model.save_pretrained(folder)
    return model


def workload(args) -> tuple[list[list[int]], list[int]]:
    rng = random.Random(0)
    prompts = [[rng.randrange(1000, 30000) for _ in range(rng.randint(*args.input))] for _ in range(args.requests)]
    return prompts, [rng.randint(*args.output) for _ in range(args.requests)]


def run_ours(folder: Path, prompts, outputs, args) -> float:
    dtype_bytes = DTYPES[args.dtype].itemsize
    cfg = json.loads((folder / "config.json").read_text())
    per_token = 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * cfg["head_dim"] * dtype_bytes
    longest = max(map(len, prompts)) + max(outputs)
    llm = LLMEngine(EngineConfig(str(folder), dtype=args.dtype, max_model_len=longest + 16, max_num_seqs=args.batch,
                                 kv_cache_bytes=per_token * (sum(map(len, prompts)) + sum(outputs) + 4096),
                                 skip_tokenizer_init=True, device=args.device))
    llm.generate([prompts[0][:16]], SamplingParams(max_tokens=4, ignore_eos=True))  # warm-up
    params = [SamplingParams(temperature=0.6, max_tokens=n, ignore_eos=True) for n in outputs]
    _sync(args.device)
    start = time.perf_counter()
    done = llm.generate(prompts, params)
    _sync(args.device)
    elapsed = time.perf_counter() - start
    assert [len(o.token_ids) for o in done] == outputs
    return elapsed


def run_hf(model, prompts, outputs, args) -> float:
    """Static batches in arrival order, left-padded; each batch runs until its longest request is done."""
    model.generation_config.pad_token_id = 0
    _sync(args.device)
    start = time.perf_counter()
    for at in range(0, len(prompts), args.batch):
        batch, want = prompts[at:at + args.batch], outputs[at:at + args.batch]
        width = max(map(len, batch))
        ids = torch.tensor([[0] * (width - len(p)) + p for p in batch], device=args.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=args.device)
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max(want), min_new_tokens=max(want),
                           do_sample=True, temperature=0.6, top_k=0, eos_token_id=None)
    _sync(args.device)
    return time.perf_counter() - start


def run_hf_continuous(model, prompts, outputs, args, cache_blocks: int | None = None) -> float | None:
    """transformers' own continuous batching (`generate_batch`'s manager), timed after its set-up. `cache_blocks`
    bounds its paged cache (of 256 tokens a block), which it otherwise sizes to 90% of the free memory, on the CPU
    too (where that is most of the machine's RAM), where transformers has ContinuousBatchingConfig."""
    if not hasattr(model, "continuous_batching_context_manager"):
        return None
    config = GenerationConfig(do_sample=True, temperature=0.6, top_k=0, eos_token_id=-1, pad_token_id=0,
                              max_new_tokens=max(outputs))
    more = {}
    if cache_blocks is not None:
        from transformers.generation import configuration_utils

        if hasattr(configuration_utils, "ContinuousBatchingConfig"):
            more["continuous_batching_config"] = configuration_utils.ContinuousBatchingConfig(
                num_blocks=cache_blocks, max_batch_tokens=2048)
    with model.continuous_batching_context_manager(generation_config=config, block=True, timeout=5,
                                                   **more) as manager:
        _sync(args.device)
        start = time.perf_counter()
        for prompt, n in zip(prompts, outputs):
            manager.add_request(prompt, max_new_tokens=n, eos_token_id=-1)
        done = 0
        while done < len(prompts):
            result = manager.get_result(timeout=60)
            done += bool(result and result.is_finished())
        _sync(args.device)
        return time.perf_counter() - start


def single_stream_roofline(folder: Path, args, enforce_eager: bool = False, tokens: int = 512,
                           copy_bytes: int = 1 << 30) -> dict:
    """Decode tokens/s of one request against weight bytes / measured device copy bandwidth, on args.device."""
    src = torch.empty(copy_bytes, dtype=torch.uint8, device=args.device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(args.device)
    start = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    _sync(args.device)
    bandwidth = 2 * 10 * src.numel() / (time.perf_counter() - start)  # read + write
    del src, dst
    cfg = json.loads((folder / "config.json").read_text())
    llm = LLMEngine(EngineConfig(str(folder), dtype=args.dtype, max_model_len=2048, max_num_seqs=8,
                                 num_kv_blocks=256, skip_tokenizer_init=True, enforce_eager=enforce_eager,
                                 device=args.device))
    weight_bytes = sum(p.numel() * p.element_size() for p in llm.runner.model.parameters())
    llm.generate([[5] * 32], SamplingParams(max_tokens=16, ignore_eos=True))
    _sync(args.device)
    start = time.perf_counter()
    llm.generate([[5] * 32], SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True))
    _sync(args.device)
    tokens_per_s = tokens / (time.perf_counter() - start)
    roofline = bandwidth / weight_bytes
    graphs = len(llm.runner.graphs)
    llm.close()
    return {"weight_bytes": weight_bytes, "copy_bandwidth_GBps": round(bandwidth / 1e9, 1),
            "decode_tokens_per_s": round(tokens_per_s, 1), "roofline_tokens_per_s": round(roofline, 1),
            "fraction_of_roofline": round(tokens_per_s / roofline, 3), "layers": cfg["num_hidden_layers"],
            "cuda_graphs": graphs}


GGUF_QUESTIONS = ["Tell me about the history of Paris.", "Explain how a bicycle works.",
                  "Write a short story about a cat.",
                  "What makes a good friend?", "Describe a rainy day in the city.", "How do plants grow?",
                  "Why is the sea salty?", "Give me tips for learning to cook."]


def run_gguf(args) -> None:
    """Ours with the GGUF's weights kept packed, ours dequantized, and llama.cpp, on one file: output tokens/s at
    1, 8 and 16 requests, the same prompts, and what each holds in memory."""
    import gc

    import psutil

    from budget.gguf import read_gguf
    from engines.llm.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(args.gguf)
    chats = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                           tokenize=False) for q in GGUF_QUESTIONS]
    prompts = [tokenizer.encode(c, add_special_tokens=False) for c in chats]
    params = SamplingParams(temperature=0, max_tokens=args.gguf_tokens, ignore_eos=True)
    process = psutil.Process()
    rows = {n: {"requests": n} for n in (1, 8, 16)}
    memory = {"gguf_tensor_bytes": read_gguf(args.gguf).tensor_bytes}
    try:
        from llama_cpp import Llama
    except ImportError:
        Llama = None
    if Llama is not None:
        before = process.memory_info().rss
        theirs = Llama(str(args.gguf), n_ctx=2048, n_threads=torch.get_num_threads(), verbose=False, use_mmap=False)
        for n, row in rows.items():
            start, tokens = time.perf_counter(), 0
            for prompt in [prompts[i % len(prompts)] for i in range(n)]:
                theirs.reset()
                out = theirs.create_completion(tokenizer.decode(prompt), max_tokens=args.gguf_tokens, temperature=0,
                                               top_k=1)
                tokens += out["usage"]["completion_tokens"]
            row["llama_cpp_tokens_per_s"] = round(tokens / (time.perf_counter() - start), 1)
        memory["llama_cpp_rss_growth_bytes"] = process.memory_info().rss - before  # weights, its KV and buffers
        del theirs
        gc.collect()
    for label, quantization, eager in (("packed", "auto", False), ("packed_eager", "auto", True),
                                       ("dequantized", "none", False)):
        ours = LLMEngine(EngineConfig(str(args.gguf), dtype=args.dtype, max_model_len=2048, max_num_seqs=16,
                                      num_kv_blocks=2048, max_num_batched_tokens=512, device=args.device,
                                      quantization=quantization, enforce_eager=eager))
        if not eager:
            memory[f"ours_{label}_weight_bytes"] = ours.runner.model.weight_bytes()
        ours.generate([prompts[0]], SamplingParams(max_tokens=4))  # warm-up
        for n, row in rows.items():
            batch = [prompts[i % len(prompts)] for i in range(n)]
            start = time.perf_counter()
            done = ours.generate(batch, [params] * n)
            row[f"ours_{label}_tokens_per_s"] = round(sum(len(o.token_ids) for o in done) /
                                                      (time.perf_counter() - start), 1)
        del ours
        gc.collect()
    for row in rows.values():
        if "llama_cpp_tokens_per_s" in row:
            row["packed_over_llama_cpp"] = round(row["ours_packed_tokens_per_s"] / row["llama_cpp_tokens_per_s"], 2)
    device = describe(args.device)
    table = Table(title=f"{args.gguf.name}: output tokens/s, {args.gguf_tokens} tokens a request, ours' activations in "
                        f"{args.dtype}, on {device}, {torch.get_num_threads()} threads")
    for col in ("requests at once", "ours (packed)", "ours (packed, layer by layer)", "ours (dequantized)",
                "llama.cpp (one at a time)", "packed / llama.cpp"):
        table.add_column(col, justify="right")
    for r in rows.values():
        table.add_row(str(r["requests"]), str(r["ours_packed_tokens_per_s"]), str(r["ours_packed_eager_tokens_per_s"]),
                      str(r["ours_dequantized_tokens_per_s"]),
                      str(r.get("llama_cpp_tokens_per_s", "not installed")), str(r.get("packed_over_llama_cpp", "")))
    Console().print(table)
    for key, value in memory.items():
        print(f"  {key:32} {value / 2**20:9.1f} MiB")
    out = args.json if args.json != Path("bench/results/llm_throughput.json") else \
        Path(f"bench/results/llm_throughput_gguf_{args.gguf.stem}.json")
    out.write_text(json.dumps({"device": device, "threads": torch.get_num_threads(), "gguf": args.gguf.name,
                               "dtype": args.dtype, "tokens_per_request": args.gguf_tokens,
                               "llama_cpp": Llama is not None, "memory": memory, "rows": list(rows.values())},
                              indent=2))
    print(f"wrote {out}")


# Each aten op the packed decode runs, by the part of the step it serves (the rest is Python and dispatch).
PROFILE_PARTS = {"GGML-block matmul": ("ggml_matmul",),
                 "int4 matmul": ("_weight_int4pack_mm",), "int8 matmul (LM head, int8 stacks)": ("_weight_int8pack_mm",),
                 "attention: KV gather and store": ("index_select", "index_copy_", "masked_fill"),
                 "attention: SDPA": ("_scaled_dot_product", "scaled_dot_product_attention"),
                 "RMSNorm": ("rms_norm", "_fused_rms_norm", "pow", "mean", "rsqrt", "div_"),
                 "dtype casts": ("_to_copy", "copy_", "to")}


def profile_gguf(args) -> None:
    """One packed stream under torch's profiler: each part's own time per token, and what no aten op accounts for
    (the fused C++ layers' own loops: norms, rotary, attention, SwiGLU; the step's Python; the dispatcher's way to
    each op). With --eager, the layer-by-layer Python path instead."""
    from torch.profiler import ProfilerActivity, profile

    from engines.llm.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(args.gguf)
    chat = tokenizer.apply_chat_template([{"role": "user", "content": GGUF_QUESTIONS[0]}], add_generation_prompt=True,
                                         tokenize=False)
    prompt = tokenizer.encode(chat, add_special_tokens=False)
    engine = LLMEngine(EngineConfig(str(args.gguf), dtype=args.dtype, max_model_len=2048, max_num_seqs=16,
                                    num_kv_blocks=2048, max_num_batched_tokens=512, device=args.device,
                                    enforce_eager=args.eager))
    decode = SamplingParams(temperature=0, max_tokens=args.gguf_tokens, ignore_eos=True)
    prefill_only = SamplingParams(temperature=0, max_tokens=1)
    engine.generate([prompt], prefill_only)  # warm-up
    timings = {}
    for label, params in (("prefill", prefill_only), ("whole", decode)):
        start = time.perf_counter()
        engine.generate([prompt], params)
        timings[label] = time.perf_counter() - start
    per_token_ms = (timings["whole"] - timings["prefill"]) / (args.gguf_tokens - 1) * 1e3
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        engine.generate([prompt], decode)
    parts = dict.fromkeys([*PROFILE_PARTS, "other aten ops"], 0.0)
    for event in prof.key_averages():
        name = event.key.removeprefix("aten::")
        part = next((p for p, names in PROFILE_PARTS.items() if name.startswith(names)), "other aten ops")
        parts[part] += event.self_cpu_time_total / 1e3 / args.gguf_tokens
    profiled_ms = sum(parts.values())
    rows = {part: round(ms, 2) for part, ms in parts.items()}
    rows["C++ loops, Python and dispatch (in no aten op)"] = round(max(per_token_ms - profiled_ms, 0), 2)
    layers = engine.runner.model.config["num_hidden_layers"]
    table = Table(title=f"{args.gguf.name}: one packed stream, ms a decoded token ({per_token_ms:.1f} ms unprofiled, "
                        f"{1e3 / per_token_ms:.1f} tokens/s), {layers} layers, on {describe(args.device)}")
    for col in ("part", "ms a token", "share", "µs a layer"):
        table.add_column(col, justify="right")
    for part, ms in rows.items():
        table.add_row(part, f"{ms:.2f}", f"{ms / per_token_ms:.0%}", f"{ms / layers * 1e3:.0f}")
    Console().print(table)
    print("the aten parts are the profiler's self times (it adds a little to each op); the last row is the "
          "unprofiled token time less them")
    out = args.json if args.json != Path("bench/results/llm_throughput.json") else \
        Path(f"bench/results/llm_profile_gguf_{args.gguf.stem}{'_eager' if args.eager else ''}.json")
    out.write_text(json.dumps({"device": describe(args.device), "threads": torch.get_num_threads(),
                               "gguf": args.gguf.name, "layers": layers, "eager": args.eager,
                               "ms_per_token": round(per_token_ms, 2),
                               "parts_ms_per_token": rows}, indent=2))
    print(f"wrote {out}")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--input", type=int, nargs=2, default=[32, 256])
    parser.add_argument("--output", type=int, nargs=2, default=[32, 256])
    parser.add_argument("--batch", type=int, default=16, help="our max_num_seqs and HF's static batch size")
    parser.add_argument("--model-config", type=Path, help="a config.json to copy (default: a ~58M Qwen3)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=Path("bench/results/llm_throughput.json"))
    parser.add_argument("--gguf", type=Path, help="a real GGUF file: ours beside llama.cpp on it")
    parser.add_argument("--gguf-tokens", type=int, default=64)
    parser.add_argument("--profile", action="store_true",
                        help="with --gguf: where one packed stream's decode time goes, instead of the table")
    parser.add_argument("--eager", action="store_true", help="with --profile: the layer-by-layer Python decode")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    if args.gguf and args.profile:
        return profile_gguf(args)
    if args.gguf:
        return run_gguf(args)
    config = json.loads(args.model_config.read_text()) if args.model_config else SMALL
    prompts, outputs = workload(args)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = random_checkpoint(folder, config, DTYPES[args.dtype], args.device)
        params = sum(p.numel() for p in model.parameters())
        hf_s = run_hf(model, prompts, outputs, args)
        hf_cb_s = run_hf_continuous(model, prompts, outputs, args)
        del model
        ours_s = run_ours(folder, prompts, outputs, args)
        roofline = single_stream_roofline(folder, args) if args.device.startswith("cuda") else None
    tokens = sum(outputs)
    padded = sum(len(outputs[i:i + args.batch]) * max(outputs[i:i + args.batch]) for i in range(0, len(outputs), args.batch))
    device = describe(args.device)
    table = Table(title=f"{args.requests} requests, input {args.input}, output {args.output}, batch {args.batch}, "
                        f"{params / 1e6:.0f}M params {args.dtype} on {device}")
    for col in ("engine", "seconds", "output tokens/s", "vs HF"):
        table.add_column(col, justify="right")
    table.add_row("HF generate (static, padded)", f"{hf_s:.1f}", f"{tokens / hf_s:.1f}", "1.00×")
    if hf_cb_s:
        table.add_row("HF continuous batching", f"{hf_cb_s:.1f}", f"{tokens / hf_cb_s:.1f}", f"{hf_s / hf_cb_s:.2f}×")
    table.add_row("ours (paged, continuous)", f"{ours_s:.1f}", f"{tokens / ours_s:.1f}", f"{hf_s / ours_s:.2f}×")
    Console().print(table)
    print(f"HF's static batches decode {padded / tokens:.2f}x the tokens asked for (padding to each batch's "
          f"longest): the most a compute-bound engine can gain at equal concurrency, before per-step overheads")
    result = {"device": device, "threads": torch.get_num_threads(), "params": params, "dtype": args.dtype,
              "requests": args.requests, "input": args.input, "output": args.output, "batch": args.batch,
              "output_tokens": tokens, "hf_seconds": round(hf_s, 2), "ours_seconds": round(ours_s, 2),
              "hf_tokens_per_s": round(tokens / hf_s, 1), "ours_tokens_per_s": round(tokens / ours_s, 1),
              "ratio": round(hf_s / ours_s, 2),
              "hf_continuous_seconds": round(hf_cb_s, 2) if hf_cb_s else None,
              "ratio_vs_hf_continuous": round(hf_cb_s / ours_s, 2) if hf_cb_s else None, "hf_padded_decode_ratio": round(padded / tokens, 2),
              "single_stream": roofline}
    if roofline:
        Console().print(roofline)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
