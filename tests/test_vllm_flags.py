"""The `vllm serve` line derived from the plan, flag by flag, against the flags vLLM documents."""
import argparse
import json
import shlex
from decimal import ROUND_DOWN, Decimal

import pytest

from budget.planner import plan_stack
from budget.target import resolve_target
from budget.units import GiB
from orchestrator.launch.vllm import VLLMLaunch, vllm_command
from orchestrator.stack import LLMSpec
from orchestrator.stack_file import load_stack
from tests.conftest import CONFIGS

# vLLM's documented `vllm serve` flags that we emit, as its parser reads them. Sources: the engine-args and serve-args
# docs (https://docs.vllm.ai/en/latest/configuration/engine_args/ and .../serve_args/), vllm/engine/arg_utils.py,
# vllm/config/cache.py and vllm/entrypoints/openai/cli_args.py on main (2026), the v0.9.2, v0.10.2 and v0.11.1
# API docs for the choices. A renamed flag upstream is caught by whoever updates this table.
DOCUMENTED = {
    "--served-model-name": {"nargs": "+"},
    "--host": {},
    "--port": {"type": int},
    "--api-key": {},
    "--gpu-memory-utilization": {"type": float},
    "--kv-cache-memory-bytes": {"type": int},  # newer vLLM only (vllm-project/vllm#21489)
    "--max-model-len": {"type": int},
    "--max-num-seqs": {"type": int},
    "--max-num-batched-tokens": {"type": int},
    "--dtype": {"choices": ["auto", "half", "float16", "bfloat16", "float", "float32"]},
    # The choices every release since v0.5 accepts; later ones add fp8_inc, bfloat16 (fp8-default models only), ...
    "--kv-cache-dtype": {"choices": ["auto", "fp8", "fp8_e4m3", "fp8_e5m2"]},
    "--block-size": {"type": int, "choices": [1, 8, 16, 32, 64, 128, 256]},
    "--seed": {"type": int},
    "--enforce-eager": {"action": "store_true"},
    "--enable-auto-tool-choice": {"action": "store_true"},
    "--tool-call-parser": {"choices": ["hermes"]},   # of vLLM's many; ours maps to the same name
    "--reasoning-parser": {"choices": ["qwen3"]},
    "--default-chat-template-kwargs": {"type": json.loads},  # vllm-project/vllm#31343
}


def _vllm_parser() -> argparse.ArgumentParser:
    """A stand-in for `vllm serve`'s parser over the documented flags, so a wrong name or value fails to parse."""
    parser = argparse.ArgumentParser(prog="vllm serve", exit_on_error=False)
    parser.add_argument("model")
    for flag, kwargs in DOCUMENTED.items():
        parser.add_argument(flag, **kwargs)
    return parser


def _spec(**fields) -> LLMSpec:
    return LLMSpec(**{"name": "qwen3-8b", "kind": "llm", "path": "Qwen/Qwen3-8B", **fields})


def _flags(launch: VLLMLaunch) -> dict[str, str | None]:
    """Each flag of the argv with its value (None for a switch); served names joined by spaces."""
    out: dict[str, str | None] = {}
    args = launch.argv[3:]
    i = 0
    while i < len(args):
        flag, i = args[i], i + 1
        values = []
        while i < len(args) and not args[i].startswith("--"):
            values.append(args[i])
            i += 1
        assert flag not in out, f"{flag} given twice"
        out[flag] = " ".join(values) if values else None
    return out


def _command(spec: LLMSpec, **overrides) -> VLLMLaunch:
    kwargs = {"share_bytes": 20 * GiB, "card_total_bytes": 24 * GiB, "kv_bytes": 3 * GiB, "max_model_len": 8192,
              "port": 18001, "api_key": None}
    return vllm_command(spec, **(kwargs | overrides))


def test_every_flag_of_a_full_spec():
    spec = _spec(aliases=["gpt-4o-mini", "qwen"], dtype="bfloat16", kv_cache_dtype="fp8_e5m2", max_num_seqs=16,
                 max_num_batched_tokens=4096, block_size=32, enforce_eager=True, tool_call_parser="hermes",
                 reasoning_parser="qwen3", enable_thinking=False, seed=7)
    launch = _command(spec, api_key="sk-local", kv_cache_memory_bytes=True)
    assert launch.argv[:3] == ["vllm", "serve", "Qwen/Qwen3-8B"]
    assert _flags(launch) == {
        "--served-model-name": "qwen3-8b gpt-4o-mini qwen",
        "--host": "127.0.0.1",
        "--port": "18001",
        "--gpu-memory-utilization": "0.8333",   # 20/24 = 0.83333..., rounded down
        "--kv-cache-memory-bytes": str(3 * GiB),
        "--max-model-len": "8192",
        "--max-num-seqs": "16",
        "--max-num-batched-tokens": "4096",
        "--dtype": "bfloat16",
        "--kv-cache-dtype": "fp8_e5m2",
        "--block-size": "32",
        "--seed": "7",
        "--enforce-eager": None,
        "--enable-auto-tool-choice": None,
        "--tool-call-parser": "hermes",
        "--reasoning-parser": "qwen3",
        "--default-chat-template-kwargs": '{"enable_thinking":false}',
        "--api-key": "sk-local",
    }
    assert launch.gpu_memory_utilization == 0.8333


def test_every_flag_is_documented_and_parses_as_vllm_reads_it():
    spec = _spec(aliases=["qwen"], dtype="float16", kv_cache_dtype="fp8", block_size=64, enforce_eager=True,
                 tool_call_parser="hermes", reasoning_parser="qwen3", chat_template_kwargs={"enable_thinking": True})
    launch = _command(spec, api_key="k", kv_cache_memory_bytes=True)
    assert set(_flags(launch)) <= set(DOCUMENTED)
    ns = _vllm_parser().parse_args(launch.argv[2:])
    assert ns.model == "Qwen/Qwen3-8B" and ns.served_model_name == ["qwen3-8b", "qwen"]
    assert ns.gpu_memory_utilization == launch.gpu_memory_utilization and 0 < ns.gpu_memory_utilization <= 1
    assert ns.kv_cache_memory_bytes == 3 * GiB and ns.dtype == "float16" and ns.kv_cache_dtype == "fp8"
    assert ns.block_size == 64 and ns.enforce_eager and ns.enable_auto_tool_choice
    assert ns.default_chat_template_kwargs == {"enable_thinking": True}


def test_defaults_leave_out_what_means_vllms_default_and_pin_what_differs():
    flags = _flags(_command(_spec()))
    # dtype auto, kv auto and block size 16 are vLLM's own defaults; eager off, no parsers, no key, no template kwargs.
    for absent in ("--dtype", "--kv-cache-dtype", "--block-size", "--enforce-eager", "--enable-auto-tool-choice",
                   "--tool-call-parser", "--reasoning-parser", "--default-chat-template-kwargs", "--api-key",
                   "--kv-cache-memory-bytes"):
        assert absent not in flags, absent
    # vLLM's defaults for these differ from ours (and between its releases), so the plan's values are always sent.
    assert flags["--max-num-seqs"] == "32"
    assert flags["--max-num-batched-tokens"] == "2048"   # ours: max(2048, max_num_seqs) when unset
    assert flags["--seed"] == "0"                        # our engine seeds with 0 when the stack gives none
    assert flags["--served-model-name"] == "qwen3-8b" and flags["--host"] == "127.0.0.1"
    assert _flags(_command(_spec(max_num_seqs=4096)))["--max-num-batched-tokens"] == "4096"


def test_kv_cache_dtype_equal_to_the_model_dtype_is_vllms_auto():
    assert "--kv-cache-dtype" not in _flags(_command(_spec(dtype="bfloat16", kv_cache_dtype="bfloat16")))
    assert "--kv-cache-dtype" not in _flags(_command(_spec(dtype="float32", kv_cache_dtype="float32")))
    for kv in ("fp8", "fp8_e4m3", "fp8_e5m2"):
        assert _flags(_command(_spec(kv_cache_dtype=kv)))["--kv-cache-dtype"] == kv


@pytest.mark.parametrize(("dtype", "kv"), [("bfloat16", "float32"), ("auto", "bfloat16"), ("bfloat16", "float16")])
def test_kv_cache_dtypes_vllm_does_not_take_are_refused(dtype, kv):
    with pytest.raises(ValueError, match=rf"kv_cache_dtype {kv} .*accepts auto .*fp8, fp8_e4m3, fp8_e5m2.*dtype: {kv}"):
        _command(_spec(dtype=dtype, kv_cache_dtype=kv))


def test_utilization_rounds_down_and_stays_in_range():
    total = 25_757_220_864
    assert _command(_spec(), share_bytes=total, card_total_bytes=total).gpu_memory_utilization == 1.0
    assert _flags(_command(_spec(), share_bytes=total, card_total_bytes=total))["--gpu-memory-utilization"] == "1.0000"
    just_under = _command(_spec(), share_bytes=total - 1, card_total_bytes=total)
    assert _flags(just_under)["--gpu-memory-utilization"] == "0.9999"   # never rounded up past the share
    tiny = _command(_spec(), share_bytes=total // 10_000 + 1, card_total_bytes=total)
    assert _flags(tiny)["--gpu-memory-utilization"] == "0.0001"


@pytest.mark.parametrize(("share", "total", "message"), [
    (0, 24 * GiB, "above 0"), (1000, 24 * GiB, "above 0"), (25 * GiB, 24 * GiB, "at most 1"),
    (GiB, 0, "plan against a real card")])
def test_utilization_out_of_range_is_refused_with_the_fix(share, total, message):
    with pytest.raises(ValueError, match=rf"model 'qwen3-8b'.*{message}"):
        _command(_spec(), share_bytes=share, card_total_bytes=total)


def test_no_path_and_no_kv_bytes_are_refused():
    with pytest.raises(ValueError, match="'qwen3-8b': engine vllm needs a path"):
        _command(_spec(path=None, config="qwen3-8b"))
    with pytest.raises(ValueError, match="nothing to pass to --kv-cache-memory-bytes"):
        _command(_spec(), kv_bytes=0, kv_cache_memory_bytes=True)
    assert "--kv-cache-memory-bytes" not in _flags(_command(_spec(), kv_bytes=0))


def test_shell_round_trips_through_shlex():
    spec = _spec(path="/models/my Qwen3 (8B)", chat_template_kwargs={"persona": "it's me"})
    launch = _command(spec, api_key="a key; rm -rf /")
    assert shlex.split(launch.shell()) == launch.argv
    assert launch.shell().startswith("vllm serve '/models/my Qwen3 (8B)' --served-model-name qwen3-8b ")


def test_the_24gb_stack_as_orchestrator_plan_would_launch_it():
    stack = load_stack(CONFIGS / "vtuber-24gb.yaml")
    total, label = resolve_target(stack.gpu.device, stack.gpu.memory, "rtx-4090", None)
    plan = plan_stack(stack, total, label)
    assert plan.fits, plan.problems
    spec = next(m for m in stack.models if m.kind == "llm")
    llm = next(m for m in plan.models if m.estimate.name == spec.name)
    launch = vllm_command(spec, llm.share_bytes, plan.total_bytes, llm.kv_bytes, plan.max_model_len, 18001, None,
                          kv_cache_memory_bytes=True)
    expected = Decimal(llm.share_bytes) / Decimal(plan.total_bytes)
    digits = expected.quantize(Decimal("0.0001"), rounding=ROUND_DOWN)
    assert _flags(launch) == {
        "--served-model-name": "qwen3-8b",
        "--host": "127.0.0.1",
        "--port": "18001",
        "--gpu-memory-utilization": str(digits),
        "--kv-cache-memory-bytes": str(llm.kv_bytes),
        "--max-model-len": "40000",
        "--max-num-seqs": "16",
        "--max-num-batched-tokens": "2048",
        "--dtype": "bfloat16",
        "--kv-cache-dtype": "fp8",
        "--seed": "0",
        "--enable-auto-tool-choice": None,
        "--tool-call-parser": "hermes",
        "--default-chat-template-kwargs": '{"enable_thinking":false}',
    }
    assert launch.argv[:3] == ["vllm", "serve", "Qwen/Qwen3-8B"]
    assert Decimal(str(launch.gpu_memory_utilization)) == digits
    assert 0 <= expected - digits < Decimal("0.0001")    # the share, to the digit, never above it
    assert launch.gpu_memory_utilization * plan.total_bytes <= llm.share_bytes
    _vllm_parser().parse_args(launch.argv[2:])


def test_orchestrator_plan_prints_the_vllm_line_it_would_run(tmp_path, run_cli):
    """engine: vllm on the 24 GB stack: `orchestrator plan` shows the exact command, and --json carries its argv."""
    text = (CONFIGS / "vtuber-24gb.yaml").read_text().replace("    kind: llm\n", "    kind: llm\n    engine: vllm\n", 1)
    stack = tmp_path / "vllm.yaml"
    stack.write_text(text)
    shown = run_cli("plan", str(stack), "--gpu", "rtx-4090", env={"COLUMNS": "400"})
    assert shown.returncode == 0, shown.stderr
    line = next(l.strip() for l in shown.stdout.splitlines() if l.strip().startswith("vllm serve"))
    planned = json.loads(run_cli("plan", str(stack), "--gpu", "rtx-4090", "--json").stdout)
    assert shlex.split(line) == planned["launch"]["qwen3-8b"]
    llm = next(m for m in planned["models"] if m["name"] == "qwen3-8b")
    argv = planned["launch"]["qwen3-8b"]
    utilization = Decimal(llm["share_bytes"]) / Decimal(planned["total_bytes"])
    assert argv[argv.index("--gpu-memory-utilization") + 1] == str(utilization.quantize(Decimal("0.0001"), ROUND_DOWN))
