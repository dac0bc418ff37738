"""Text embeddings: a sentence-transformers engine and the async wrapper servers call."""
from engines.exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {"async_embedder": "AsyncEmbedder",
    "embedder": "EmbeddingResult SentenceEmbedder", "engines.errors": "DimensionsError EmbeddingInputError"})
