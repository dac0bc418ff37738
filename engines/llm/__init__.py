"""The LLM engine: paged KV cache, continuous batching, our own Qwen3 / Qwen2 / Llama models."""
from engines.exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {"async_llm": "AsyncLLM", "config": "EngineConfig",
    "llm_engine": "LLMEngine", "outputs": "RequestOutput", "sampling_params": "SamplingParams",
    "requests": "Priority"})
