"""The HTTP server: OpenAI `/v1` for the LLM (and, later, the companion endpoints), on one port."""
