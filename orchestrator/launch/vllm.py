"""The `vllm serve` command line for an LLM, derived from the plan so vLLM holds no more than the share we proved fits.

Facts about vLLM's flags are from its own source and docs, the version named beside each:
- `--gpu-memory-utilization` is a float in (0, 1], a fraction of the card's TOTAL memory (vLLM requests
  `total_memory * gpu_memory_utilization`, total from cudaMemGetInfo, and refuses to start when less than that is
  free at start-up: "Free memory on device ... is less than desired GPU memory utilization"). Parsed with plain
  `float`, so any number of digits is accepted (CacheConfig `Field(gt=0, le=1)` in the v0.11.1 docs and on main).
- `--kv-cache-memory-bytes` came with vllm-project/vllm#21489 (reviewed and merged 2025-07, after v0.10.0; its
  first release is not pinned here, so the caller's version check decides). CacheConfig: "Size of KV Cache per GPU
  in bytes ... (when not-None) ignores gpu_memory_utilization" for the KV size; the start-up free-memory check on
  the utilization still runs. Parsed by `human_readable_int`, whose suffixes changed meaning between releases
  (`1K`, `1M` binary in older ones; `1M` decimal, `1Mi` binary later), so we pass a bare integer, read the same by all.
- `--kv-cache-dtype` choices: auto, fp8, fp8_e4m3, fp8_e5m2 since v0.5 (fp8_inc and others later); "auto" keeps
  the KV cache in the model's dtype. bfloat16/float16 were added to the choices only for models that default to an
  fp8 cache (main 2026: "an invalid option for models that do not default to fp8"); float32 was never a choice.
- `--dtype` choices: auto, half, float16, bfloat16, float, float32 (unchanged from v0.5 to main 2026).
- `--block-size` choices grew from {8,16,32} (v0.5-v0.6) to {1,8,16,32,64,128} (v0.9-v0.10) and 256 (v0.11.1);
  v0.10.2-v0.11.1 say "On CUDA devices, only block sizes up to 32 are supported". Unset means vLLM chooses, 16 on
  CUDA for ordinary attention (CacheConfig.DEFAULT_BLOCK_SIZE, main 2026).
- `--served-model-name` takes several names (`str | list[str]`, nargs "+", main 2026); any of them is served.
- `--tool-call-parser hermes` (docs, tool calling, v0.8.4-latest; the parser Qwen's docs name for Qwen2.5/Qwen3),
  needs `--enable-auto-tool-choice`. `--reasoning-parser qwen3` (vllm/reasoning/qwen3_reasoning_parser.py
  registers "qwen3", main 2026).
- `--default-chat-template-kwargs` (JSON, request values take precedence) came with vllm-project/vllm#31343,
  opened 2025-12; older releases reject it, so it is only passed when the stack sets enable_thinking or
  chat_template_kwargs.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.stack import LLMSpec

# Four decimals: vLLM accepts any float, but one step of 1e-4 is 2.4 MiB of a 24 GiB card and 14 MiB of a 141 GB
# one, below what a start-up measures reliably, and a short number is what a user can read and retype by hand.
UTILIZATION_DIGITS = 4
FP8_KV_DTYPES = ("fp8", "fp8_e4m3", "fp8_e5m2")
VLLM_DEFAULT_BLOCK_SIZE = 16
LOOPBACK = "127.0.0.1"


@dataclass(slots=True, frozen=True)
class VLLMLaunch:
    """One `vllm serve` invocation and the card fraction it was given, for the supervisor and for `plan` to show."""

    argv: list[str]
    gpu_memory_utilization: float

    def shell(self) -> str:
        """The command as one shell-quoted line, so a user can paste what `orchestrator plan` prints."""
        return shlex.join(self.argv)


def vllm_command(spec: LLMSpec, share_bytes: int, card_total_bytes: int, kv_bytes: int, max_model_len: int,
                 port: int, api_key: str | None, kv_cache_memory_bytes: bool = False) -> VLLMLaunch:
    """The exact `vllm serve` argv that holds `spec` to its planned share of the card."""
    if spec.path is None:
        raise ValueError(f"model {spec.name!r}: engine vllm needs a path (a local folder or a Hugging Face id) "
                         "to pass to `vllm serve`; a shipped config alone can be planned but not served")
    utilization, utilization_text = utilization_of(spec.name, share_bytes, card_total_bytes)
    argv = ["vllm", "serve", spec.path,
            "--served-model-name", spec.name, *spec.aliases,
            "--host", LOOPBACK, "--port", str(port),
            "--gpu-memory-utilization", utilization_text]
    if kv_cache_memory_bytes:
        if kv_bytes <= 0:
            raise ValueError(f"model {spec.name!r}: the plan left {kv_bytes} bytes of KV cache, so there is nothing "
                             "to pass to --kv-cache-memory-bytes; give the model more memory or shorten max_model_len")
        argv += ["--kv-cache-memory-bytes", str(int(kv_bytes))]
    # Always passed: the plan's numbers, and vLLM's own defaults (max_num_seqs 256 or 1024, max_num_batched_tokens
    # chosen per GPU and release) differ from ours, so leaving them out would change the activation peak we planned.
    # None means max(2048, max_num_seqs) to our planner (budget/estimators/llm.py) and our engine alike.
    batched = spec.max_num_batched_tokens or max(2048, spec.max_num_seqs)
    argv += ["--max-model-len", str(max_model_len), "--max-num-seqs", str(spec.max_num_seqs),
             "--max-num-batched-tokens", str(batched)]
    if spec.dtype != "auto":  # vLLM's default is auto as well, and our planner's auto follows vLLM's choice
        argv += ["--dtype", spec.dtype]
    kv_dtype = _kv_cache_dtype(spec)
    if kv_dtype is not None:
        argv += ["--kv-cache-dtype", kv_dtype]
    if spec.block_size != VLLM_DEFAULT_BLOCK_SIZE:  # left at default, vLLM may pick what its attention backend needs
        argv += ["--block-size", str(spec.block_size)]
    # Our engine seeds with 0 when the stack gives none; vLLM's default seed has changed between releases.
    argv += ["--seed", str(spec.seed if spec.seed is not None else 0)]
    if spec.enforce_eager:
        argv.append("--enforce-eager")
    if spec.tool_call_parser is not None:
        argv += ["--enable-auto-tool-choice", "--tool-call-parser", spec.tool_call_parser]
    if spec.reasoning_parser is not None:
        argv += ["--reasoning-parser", spec.reasoning_parser]
    template_kwargs = dict(spec.chat_template_kwargs)  # the same merge orchestrator/run.py gives our own engine
    if spec.enable_thinking is not None:
        template_kwargs.setdefault("enable_thinking", spec.enable_thinking)
    if template_kwargs:
        argv += ["--default-chat-template-kwargs", json.dumps(template_kwargs, separators=(",", ":"))]
    if api_key:
        argv += ["--api-key", api_key]
    return VLLMLaunch(argv, utilization)


def utilization_of(name: str, share_bytes: int, card_total_bytes: int) -> tuple[float, str]:
    """The share as a fraction of the card, rounded down in integers so vLLM can never be handed more than the share."""
    if card_total_bytes <= 0:
        raise ValueError(f"model {name!r}: the card's total memory is {card_total_bytes} bytes; plan against a real "
                         "card (gpu.memory, --gpu or --gpu-memory) before deriving vLLM's --gpu-memory-utilization")
    scale = 10 ** UTILIZATION_DIGITS
    steps = share_bytes * scale // card_total_bytes
    if steps <= 0:
        raise ValueError(f"model {name!r}: its share of {share_bytes:,} bytes is under 1/{scale:,} of the card "
                         f"({card_total_bytes:,} bytes), and vLLM's --gpu-memory-utilization must be above 0; "
                         "give the model more memory (memory: rest, a size or a percent)")
    if steps > scale:
        raise ValueError(f"model {name!r}: its share of {share_bytes:,} bytes is more than the card's "
                         f"{card_total_bytes:,} bytes, and vLLM's --gpu-memory-utilization is at most 1; "
                         "plan against the card vLLM will run on, or lower the model's memory")
    return steps / scale, f"{steps // scale}.{steps % scale:0{UTILIZATION_DIGITS}d}"


def _kv_cache_dtype(spec: LLMSpec) -> str | None:
    """vLLM's --kv-cache-dtype for ours, None where vLLM's `auto` (the model's dtype) already is ours."""
    kv = spec.kv_cache_dtype
    if kv == "auto" or kv == spec.dtype:
        return None
    if kv in FP8_KV_DTYPES:
        return kv
    raise ValueError(f"model {spec.name!r}: kv_cache_dtype {kv} with dtype {spec.dtype} cannot be launched on vLLM, "
                     f"whose --kv-cache-dtype accepts auto (the model's dtype) or {', '.join(FP8_KV_DTYPES)}; "
                     f"set dtype: {kv} as well to keep a {kv} KV cache, or kv_cache_dtype: auto or fp8")
