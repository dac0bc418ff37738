"""Step 3: single-stream decode against its roofline, at 256, 4k and 32k tokens of context, in bf16 and in int4
(quantized on the fly), with CUDA graphs; first, on a GPU, decode attention alone at 4k and 32k, one program per KV
head beside split-KV (bench/decode_attention.py).

The roofline of one decode step is the bytes it must read, the weights and the context's KV cache, over the card's
measured copy bandwidth. Decode speed is (tokens - 1) over the time from the first token to the last, step by
step through the engine (no prefix cache, so every context is prefilled whole). Each row is kept as it is measured,
so a time box that ends during the 32k prefill still returns the others.
The smoke run: the tiny Qwen3 in float32 on the CPU at 64, 256 and 1024 tokens, eager (no graphs there), and the
"roofline" the host's copy bandwidth.
"""
from __future__ import annotations

import time

from bench.gpu_check.common import Context, Outcome
from bench.gpu_check.step_models import folders

CONTEXTS = {False: (256, 4096, 32768), True: (64, 256, 1024)}
TOKENS = {False: 128, True: 16}
FORMATS = {False: (("bfloat16", "none"), ("bfloat16", "int4")), True: (("float32", "none"), ("float32", "int4"))}
COPY_BYTES = {False: 1 << 30, True: 64 << 20}


def copy_bandwidth(device: str, size: int) -> float:
    """Bytes read plus written per second by a device-to-device copy."""
    import torch

    src = torch.empty(size, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync(device)
    start = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    sync(device)
    return 2 * 10 * size / (time.perf_counter() - start)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(llm, prompt: list[int], tokens: int) -> tuple[float, float]:
    """Seconds to the first token (the prefill) and from it to the last, stepping the engine by hand."""
    from engines.llm import SamplingParams

    llm.add_request("decode", prompt, SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True))
    start = time.perf_counter()
    first = None
    while llm.has_unfinished_requests():
        outputs = llm.step()
        if first is None and any(o.num_output_tokens for o in outputs):
            first = time.perf_counter()
    return first - start, max(time.perf_counter() - first, 1e-9)


def attention_alone(ctx: Context) -> dict:
    """bench/decode_attention.py's rows on a GPU: decode attention alone at Qwen3-8B's shape, one program per KV
    head beside split-KV, at 4k and 32k tokens (the engine's rows below show what it adds up to)."""
    import torch
    from decode_attention import measure

    if not ctx.cuda:
        return {"why": "timed on a GPU only (the interpreter's timings mean nothing)"}
    try:
        return {"rows": [row for context in CONTEXTS[False][1:] for row in
                         measure(context, ctx.device, torch.bfloat16, 50)]}
    except Exception as exc:  # noqa: BLE001  (its own row; the engine's rows still run)
        return {"error": f"{type(exc).__name__}: {exc}"}


def run(ctx: Context) -> Outcome:
    from engines.llm import EngineConfig, LLMEngine

    contexts, tokens = CONTEXTS[ctx.smoke], TOKENS[ctx.smoke]
    bandwidth = copy_bandwidth(ctx.device, COPY_BYTES[ctx.smoke])
    longest = max(contexts) + tokens + 64
    rows, failures = [], []
    attention = attention_alone(ctx)
    if "error" in attention:
        failures.append(f"decode attention alone: {attention['error']}")
    data = {"copy_bandwidth_GBps": round(bandwidth / 1e9, 1), "tokens": tokens, "attention_alone": attention,
            "rows": rows}
    ctx.progress(data)
    for dtype, quantization in FORMATS[ctx.smoke]:
        llm = LLMEngine(EngineConfig(str(folders(ctx)["llm"]), dtype=dtype, quantization=quantization,
                                     max_model_len=longest, max_num_seqs=1, num_kv_blocks=-(-longest // 16) + 8,
                                     max_num_batched_tokens=8192, enable_prefix_caching=False,
                                     skip_tokenizer_init=True, device=ctx.device))
        runner = llm.runner
        weights = sum(t.numel() * t.element_size() for t in [*runner.model.parameters(), *runner.model.buffers()])
        kv_per_token = runner.block_bytes // runner.block_size
        for context in contexts:
            prefill, decode = timed(llm, [5 + i % 1000 for i in range(context)], tokens)
            per_s = (tokens - 1) / decode
            roofline = bandwidth / (weights + kv_per_token * context)
            rows.append({"dtype": dtype, "quantization": quantization, "context": context,
                         "prefill_s": round(prefill, 3), "decode_tokens_per_s": round(per_s, 1),
                         "roofline_tokens_per_s": round(roofline, 1),
                         "fraction_of_roofline": round(per_s / roofline, 3),
                         "weight_bytes": weights, "kv_bytes_read": kv_per_token * context,
                         "cuda_graphs": len(runner.graphs)})
            print(rows[-1], flush=True)
            ctx.progress(data)
        if ctx.cuda and not runner.graphs:
            failures.append(f"{dtype}/{quantization}: no CUDA graph was captured on CUDA")
        llm.close()
        del llm, runner
        if ctx.cuda:
            import torch
            torch.cuda.empty_cache()
    if not ctx.cuda:
        data["cuda_graphs_why"] = "CUDA graphs are captured only on CUDA; every row ran eager"
    data["markdown"] = "\n".join(["| weights | context | prefill s | decode tok/s | roofline tok/s | of roofline |",
                                  "|---|---:|---:|---:|---:|---:|"]
                                 + [f"| {r['dtype']} {r['quantization']} | {r['context']} | {r['prefill_s']} | "
                                    f"{r['decode_tokens_per_s']} | {r['roofline_tokens_per_s']} | "
                                    f"{r['fraction_of_roofline']:.0%} |" for r in rows]) + "\n"
    if attention.get("rows"):
        data["markdown"] += "\n".join(["\n| attention alone, context | splits | µs | GB/s of KV | relative error |",
                                        "|---:|---:|---:|---:|---:|"]
                                       + [f"| {r['context']} | {r['splits']} | {r['us']} | {r['kv_gb_per_s']} | "
                                          f"{r['relative_error']:.1e} |" for r in attention["rows"]]) + "\n"
    summary = "; ".join(f"{r['quantization'] if r['quantization'] != 'none' else r['dtype']} at {r['context']}: "
                        f"{r['decode_tokens_per_s']} tok/s = {r['fraction_of_roofline']:.0%}" for r in rows)
    return Outcome(data, summary, failures)
