"""The command line a launched LLM server runs with: vLLM's flags from the plan, or a stack's own template."""
from __future__ import annotations

import math

from budget.planner import ModelPlan, Plan


def launch_argv(spec, p: ModelPlan, plan: Plan, kv_bytes: int, port: int, api_key: str) -> list[str]:
    """engine: vllm gets `vllm serve` with the plan's share; engine: command its argv with the fields filled in."""
    max_model_len = spec.max_model_len or p.estimate.max_model_len
    if spec.engine == "vllm":
        from orchestrator.launch.vllm import vllm_command

        return vllm_command(spec, p.share_bytes, plan.total_bytes, kv_bytes, max_model_len, port, api_key).argv
    fields = {"port": port, "api_key": api_key, "path": spec.path or "", "name": spec.name,
              "share_bytes": p.share_bytes, "gpu_memory_utilization": f"{math.floor(p.share_bytes / plan.total_bytes * 1e4) / 1e4:.4f}",
              "max_model_len": max_model_len}
    try:
        return [arg.format(**fields) for arg in spec.command]
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"model {spec.name!r}: its command has a placeholder this server does not fill ({error}); "
                         f"use only {', '.join('{' + k + '}' for k in fields)}") from None
