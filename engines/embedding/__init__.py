"""Text embeddings: a sentence-transformers engine and the async wrapper servers call."""
from engines.exports import lazy_exports

_HOMES = {
    "AsyncEmbedder": "engines.embedding.async_embedder",
    "EmbeddingResult": "engines.embedding.embedder",
    "SentenceEmbedder": "engines.embedding.embedder",
    "DimensionsError": "engines.errors",
    "EmbeddingInputError": "engines.errors",
}
__all__ = sorted(_HOMES)
__getattr__ = lazy_exports(__name__, _HOMES)
