"""Our own decoder-only models (Qwen3, Qwen2/2.5, Llama 3.x) over the paged KV pool."""
