"""Text embeddings: a sentence-transformers engine and the async wrapper servers call."""
from engines.embedding.async_embedder import AsyncEmbedder
from engines.embedding.embedder import EmbeddingResult, SentenceEmbedder
from engines.errors import DimensionsError, EmbeddingInputError

__all__ = ["AsyncEmbedder", "DimensionsError", "EmbeddingInputError", "EmbeddingResult", "SentenceEmbedder"]
