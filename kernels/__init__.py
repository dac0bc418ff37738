"""Triton kernels, each beside a plain-PyTorch reference with the same signature.

This package shares its import name with Hugging Face's `kernels` distribution; the two cannot be
installed in one environment (tests/test_imports.py checks transformers is not fooled by ours).
"""
