"""The command line a launched LLM server runs with: vLLM's flags from the plan, or a stack's own template."""
from __future__ import annotations

from budget.planner import ModelPlan, StackPlan
from orchestrator.launch.vllm import utilization_of, vllm_command


def launch_argv(spec, p: ModelPlan, card_total_bytes: int, kv_bytes: int, port: int, api_key: str) -> list[str]:
    """engine: vllm gets `vllm serve` with the plan's share of its card; engine: command its argv with the fields
    filled in. The launched server sees only its card (CUDA_VISIBLE_DEVICES), so no device flag is passed."""
    max_model_len = spec.max_model_len or p.estimate.max_model_len
    if spec.engine == "vllm":
        return vllm_command(spec, p.share_bytes, card_total_bytes, kv_bytes, max_model_len, port, api_key).argv
    fields = {"port": port, "api_key": api_key, "path": spec.path or "", "name": spec.name,
              "share_bytes": p.share_bytes, "max_model_len": max_model_len,
              "gpu_memory_utilization": utilization_of(spec.name, p.share_bytes, card_total_bytes)[1]}
    try:
        return [arg.format(**fields) for arg in spec.command]
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"model {spec.name!r}: its command has a placeholder this server does not fill ({error}); "
                         f"use only {', '.join('{' + k + '}' for k in fields)}") from None


def planned_launches(stack, plan: StackPlan) -> dict[str, list[str]]:
    """What `orchestrator run` would launch for each LLM we start as a server (port 8000 here, no key: at run time
    both are chosen then); `orchestrator plan` prints these so a user can run them by hand."""
    launches = {}
    for spec, p in zip(stack.models, plan.models):
        if spec.kind == "llm" and spec.url is None and spec.engine != "ours" and p.share_bytes:
            launches[spec.name] = launch_argv(spec, p, plan.card_of(p).total_bytes, p.kv_bytes, 8000, "")
    return launches
