"""The LLM engine: paged KV cache, continuous batching, our own Qwen3 / Qwen2 / Llama models."""
from engines.llm.async_llm import AsyncLLM
from engines.llm.config import EngineConfig
from engines.llm.llm_engine import LLMEngine
from engines.llm.outputs import RequestOutput
from engines.llm.sampling_params import SamplingParams
from engines.llm.sequence import Priority

__all__ = ["AsyncLLM", "EngineConfig", "LLMEngine", "Priority", "RequestOutput", "SamplingParams"]
