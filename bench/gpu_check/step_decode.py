"""Step 4: single-stream decode against the roofline with and without CUDA graphs, and throughput beside
transformers' own continuous batching, through bench/llm_throughput.py's functions on the LLM made for this check.

On a GPU that is Qwen3-8B in bf16 (random weights); on the smoke run the tiny Qwen3 in float32 on the CPU, where no
graph is captured (both single-stream rows are eager, and the JSON says so) and the "roofline" is the host's copy
bandwidth over the weights.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

from bench.gpu_check.common import Context, Outcome
from bench.gpu_check.step_models import folders


@dataclass(slots=True, frozen=True)
class Shape:
    requests: int
    input: tuple[int, int]
    output: tuple[int, int]
    batch: int
    dtype: str
    single_tokens: int   # tokens each single-stream run decodes
    copy_bytes: int      # the buffer the bandwidth is measured with


SHAPES = {True: Shape(4, (8, 32), (8, 16), 4, "float32", 32, 64 << 20),
          False: Shape(32, (128, 512), (64, 256), 32, "bfloat16", 256, 1 << 30)}


def run(ctx: Context) -> Outcome:
    import torch
    from llm_throughput import run_hf_continuous, run_ours, single_stream_roofline, workload
    from transformers import AutoModelForCausalLM

    shape = SHAPES[ctx.smoke]
    folder = folders(ctx)["llm"]
    args = argparse.Namespace(requests=shape.requests, input=list(shape.input), output=list(shape.output),
                              batch=shape.batch, dtype=shape.dtype, device=ctx.device)
    prompts, outputs = workload(args)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, shape.dtype)).to(ctx.device).eval()
    hf_s = run_hf_continuous(model, prompts, outputs, args)
    del model
    if ctx.cuda:
        torch.cuda.empty_cache()
    ours_s = run_ours(folder, prompts, outputs, args)
    single = {name: single_stream_roofline(folder, args, eager, shape.single_tokens, shape.copy_bytes)
              for name, eager in (("cuda_graphs", False), ("eager", True))}
    tokens = sum(outputs)
    data = {"shape": asdict(shape), "output_tokens": tokens, "ours_seconds": round(ours_s, 2),
            "ours_tokens_per_s": round(tokens / ours_s, 1),
            "hf_continuous_seconds": None if hf_s is None else round(hf_s, 2),
            "hf_continuous_tokens_per_s": None if hf_s is None else round(tokens / hf_s, 1),
            "ours_over_hf_continuous": None if hf_s is None else round(hf_s / ours_s, 2), "single_stream": single,
            "graph_speedup": round(single["cuda_graphs"]["decode_tokens_per_s"]
                                   / single["eager"]["decode_tokens_per_s"], 2)}
    if hf_s is None:
        data["why"] = "this transformers has no continuous_batching_context_manager"
    if not single["cuda_graphs"]["cuda_graphs"]:
        data["cuda_graphs_why"] = "CUDA graphs are captured only on CUDA; both single-stream rows ran eager"
    failures = ["no CUDA graph was captured on CUDA"] if ctx.cuda and not single["cuda_graphs"]["cuda_graphs"] else []
    g, e = single["cuda_graphs"], single["eager"]
    summary = (f"single stream {g['decode_tokens_per_s']} tok/s {'graphs' if g['cuda_graphs'] else 'eager'} / "
               f"{e['decode_tokens_per_s']} eager = {g['fraction_of_roofline']:.0%} / {e['fraction_of_roofline']:.0%} "
               f"of roofline {g['roofline_tokens_per_s']}; {shape.requests} requests: ours {data['ours_tokens_per_s']} "
               f"tok/s, HF continuous {data['hf_continuous_tokens_per_s']} "
               f"({data['ours_over_hf_continuous']}x)")
    return Outcome(data, summary, failures)
