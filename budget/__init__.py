"""Memory accounting: estimate every model, split the card, size the LLM's KV cache. Never imports torch."""
