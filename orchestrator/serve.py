"""`orchestrator serve STACK`: plan the stack, start its LLM with the plan's KV share, serve OpenAI /v1 on one port.

The companion engines (ASR, TTS, embeddings, VAD) and per-model worker processes come with
`orchestrator run`; this command serves the stack's LLM in this process.
"""
from __future__ import annotations

import logging

from rich.console import Console

log = logging.getLogger(__name__)


def serve(stack_path: str, api_key: str | None, host: str | None, port: int | None, errors: Console) -> int:
    from budget.estimate import PlanInputError
    from budget.planner import plan_stack
    from budget.target import resolve_target
    from budget.tensors import CheckpointError
    from budget.units import SizeError
    from orchestrator.stack_file import StackError, load_stack

    try:
        stack = load_stack(stack_path)
        total, label = resolve_target(stack.gpu.device, stack.gpu.memory, None, None)
        plan = plan_stack(stack, total, label)
    except (StackError, PlanInputError, CheckpointError, SizeError) as exc:
        errors.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        return 2
    if not plan.fits:
        for problem in plan.problems:
            errors.print(f"[bold red]does not fit:[/bold red] {problem}", highlight=False, soft_wrap=True)
        errors.print(f"see `orchestrator plan {stack_path}` for the whole split", highlight=False)
        return 1
    llm_plan = next((m for m in plan.models if m.estimate.kind == "llm"), None)
    if llm_plan is None:
        errors.print("[bold red]error:[/bold red] the stack has no `kind: llm` model to serve", highlight=False)
        return 2
    spec = next(m for m in stack.models if m.name == llm_plan.estimate.name)
    others = [m.name for m in stack.models if m.kind != "llm"]
    if others:
        errors.print(f"note: serving only the LLM {spec.name!r}; {', '.join(others)} start with `orchestrator run`",
                     highlight=False)
    return _run_server(stack, spec, llm_plan, api_key, host, port, errors)


def _run_server(stack, spec, llm_plan, api_key, host, port, errors: Console) -> int:
    import uvicorn

    from engines.llm import AsyncLLM, EngineConfig
    from engines.llm.models.loader import ModelLoadError
    from orchestrator.server.app import build_app
    from orchestrator.server.chat_output import REASONING_PARSERS, TOOL_PARSERS
    from orchestrator.server.state import LLMState

    for field, value, known in (("tool_call_parser", spec.tool_call_parser, TOOL_PARSERS),
                                ("reasoning_parser", spec.reasoning_parser, REASONING_PARSERS)):
        if value is not None and value not in known:
            errors.print(f"[bold red]error:[/bold red] model {spec.name!r}: {field} {value!r} is not known; "
                         f"use one of {', '.join(sorted(known))}", highlight=False)
            return 2
    try:
        config = EngineConfig.from_spec(spec, llm_plan.kv_bytes, device=llm_plan.device)
        llm = AsyncLLM.from_config(config, spec.max_pending_requests)
    except (ModelLoadError, ValueError, OSError) as exc:
        errors.print(f"[bold red]error:[/bold red] cannot start {spec.name!r}: {exc}", highlight=False, soft_wrap=True)
        return 2
    template_kwargs = dict(spec.chat_template_kwargs)
    if spec.enable_thinking is not None:
        template_kwargs.setdefault("enable_thinking", spec.enable_thinking)
    state = LLMState(llm, spec.name, config.max_model_len, template_kwargs, spec.seed, spec.tool_call_parser,
                     spec.reasoning_parser)
    app = build_app(state, api_key or stack.server.api_key)
    try:
        uvicorn.run(app, host=host or stack.server.host, port=port or stack.server.port, log_level="info")
    finally:
        llm.shutdown()
    return 0
