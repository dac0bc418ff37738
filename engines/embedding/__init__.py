"""Text embeddings: a sentence-transformers engine and the async wrapper servers call."""
from engines.embedding.async_embedder import AsyncEmbedder
from engines.embedding.embedder import DimensionsError, EmbeddingInputError, EmbeddingResult, SentenceEmbedder

__all__ = ["AsyncEmbedder", "DimensionsError", "EmbeddingInputError", "EmbeddingResult", "SentenceEmbedder"]
