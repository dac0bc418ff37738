"""The LLM engine: paged KV cache, continuous batching, our own Qwen3 / Qwen2 / Llama models."""
from engines.exports import lazy_exports

_HOMES = {
    "AsyncLLM": "engines.llm.async_llm",
    "EngineConfig": "engines.llm.config",
    "LLMEngine": "engines.llm.llm_engine",
    "RequestOutput": "engines.llm.outputs",
    "SamplingParams": "engines.llm.sampling_params",
    "Priority": "engines.llm.requests",
}
__all__ = sorted(_HOMES)
__getattr__ = lazy_exports(__name__, _HOMES)
