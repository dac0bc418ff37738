"""Step 4: throughput on nano-vllm's workload (random prompts and lengths, bench/llm_throughput.py's) beside
transformers' own continuous batching, on the LLM made for this check: Qwen3-8B in bf16 (random weights) on a GPU,
the tiny Qwen3 in float32 on the smoke run.
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


SHAPES = {True: Shape(4, (8, 32), (8, 16), 4, "float32"), False: Shape(32, (128, 512), (64, 256), 32, "bfloat16")}


def run(ctx: Context) -> Outcome:
    import torch
    from llm_throughput import run_hf_continuous, run_ours, workload
    from transformers import AutoModelForCausalLM

    shape = SHAPES[ctx.smoke]
    folder = folders(ctx)["llm"]
    args = argparse.Namespace(requests=shape.requests, input=list(shape.input), output=list(shape.output),
                              batch=shape.batch, dtype=shape.dtype, device=ctx.device)
    prompts, outputs = workload(args)
    ours_s = run_ours(folder, prompts, outputs, args)
    tokens = sum(outputs)
    data = {"shape": asdict(shape), "output_tokens": tokens, "ours_seconds": round(ours_s, 2),
            "ours_tokens_per_s": round(tokens / ours_s, 1)}
    ctx.progress(data)
    if ctx.cuda:
        torch.cuda.empty_cache()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, shape.dtype)).to(ctx.device).eval()
    # its paged cache sized to the workload (256-token blocks), not to 90% of the free memory
    blocks = sum(-(-(len(p) + n) // 256) for p, n in zip(prompts, outputs)) + shape.batch
    hf_s = run_hf_continuous(model, prompts, outputs, args, cache_blocks=blocks)
    data.update({"hf_continuous_seconds": None if hf_s is None else round(hf_s, 2),
                 "hf_continuous_tokens_per_s": None if hf_s is None else round(tokens / hf_s, 1),
                 "ours_over_hf_continuous": None if hf_s is None else round(hf_s / ours_s, 2)})
    if hf_s is None:
        data["why"] = "this transformers has no continuous_batching_context_manager"
    summary = (f"{shape.requests} requests, {tokens} tokens: ours {data['ours_tokens_per_s']} tok/s, transformers' "
               f"continuous batching {data['hf_continuous_tokens_per_s']} ({data['ours_over_hf_continuous']}x)")
    return Outcome(data, summary)
