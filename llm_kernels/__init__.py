"""The LLM engine's Triton kernels, each beside a plain-PyTorch reference with the same signature.

Named `llm_kernels`, not `kernels`: Hugging Face's `kernels` distribution (which transformers imports)
owns that top-level name, and two packages under one name in one process break whichever loads second.
"""
