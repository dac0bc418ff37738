"""How one LLM engine is set up: the serving limits of the stack file plus the KV pool the planner sized."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from budget.estimators.llm import serving_dtype
from budget.fp8 import kv_cache_dtype_for
from engines.base import local_model_dir

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                "fp8": torch.float8_e4m3fn, "fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}


@dataclass(slots=True)
class EngineConfig:
    model: str
    dtype: str = "auto"
    max_model_len: int | None = None            # None: the model's max_position_embeddings
    max_num_seqs: int = 32
    max_num_batched_tokens: int | None = None   # None: max(2048, max_num_seqs), as the planner assumes
    block_size: int = 16
    kv_cache_dtype: str = "auto"
    quantization: str = "auto"                  # auto: a GGUF kept as stored; none: dequantized; int8/int4: on the fly
    kv_cache_bytes: int | None = None           # the planner's KV share; exactly this many bytes are allocated
    num_kv_blocks: int | None = None            # or a block count, for tests and benchmarks
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    skip_tokenizer_init: bool = False           # token ids in and out, no text (benchmarks, id-only clients)
    device: str | None = None                   # None: cuda when present, else cpu
    seed: int = 0
    grammar_compile_timeout_s: float = 10.0     # a structured output's grammar not compiled by then is refused

    def __post_init__(self) -> None:
        if (self.kv_cache_bytes is None) == (self.num_kv_blocks is None):
            raise ValueError("give exactly one of kv_cache_bytes (the planner's KV share) or num_kv_blocks")
        if self.block_size not in (16, 32, 64, 128):
            raise ValueError(f"block_size must be 16, 32, 64 or 128, got {self.block_size}")
        self.max_num_batched_tokens = self.max_num_batched_tokens or max(2048, self.max_num_seqs)
        self.device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")

    @classmethod
    def from_spec(cls, spec, kv_cache_bytes: int, device: str | None = None) -> EngineConfig:
        """The engine for a stack file's LLM entry, with the KV bytes its plan gave it."""
        return cls(model=str(local_model_dir(spec)), dtype=spec.dtype, max_model_len=spec.max_model_len,
                   max_num_seqs=spec.max_num_seqs, max_num_batched_tokens=spec.max_num_batched_tokens,
                   block_size=spec.block_size, kv_cache_dtype=spec.kv_cache_dtype, kv_cache_bytes=kv_cache_bytes,
                   quantization=spec.quantization,
                   enforce_eager=spec.enforce_eager, device=device, seed=spec.seed or 0)

    def torch_dtype(self, hf_config: dict) -> torch.dtype:
        return TORCH_DTYPES[serving_dtype(self.dtype, hf_config)]

    def kv_torch_dtype(self, hf_config: dict) -> torch.dtype:
        """The pool's dtype; on a CUDA card below 8.9 `fp8` is e5m2 and fp8_e4m3 a ValueError (budget/fp8.py)."""
        if self.kv_cache_dtype == "auto":
            return self.torch_dtype(hf_config)
        on_cuda = self.device.startswith("cuda")
        return TORCH_DTYPES[kv_cache_dtype_for(self.kv_cache_dtype,
                                               torch.cuda.get_device_capability(self.device) if on_cuda else None)]
