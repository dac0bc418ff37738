"""Text embeddings on sentence-transformers: our own tokenising and batching, the model's own forward pass.

Every input becomes a list of the model's token ids first (text through its tokenizer, token arrays as sent,
framed by the same special tokens text gets), so lengths are checked and usage is counted before any compute,
and inputs of many requests can share one padded forward pass.
"""
from __future__ import annotations

import gc
import logging
from dataclasses import dataclass

import numpy as np
import torch

from engines.base import Engine, local_model_dir, spec_device
from engines.errors import DimensionsError, EmbeddingInputError

log = logging.getLogger(__name__)

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
WARMUP_TOKEN = "hello"  # an ordinary word; warmup fills every position with it


@dataclass(slots=True)
class EmbeddingResult:
    vectors: np.ndarray   # float32 [n, dimensions]
    prompt_tokens: int    # every token the model read, its special tokens included


class SentenceEmbedder(Engine):
    kind = "embedding"

    def __init__(self, model: str, device: str | None = None, dtype: str = "float32", batch_size: int = 32,
                 max_seq_length: int | None = None, name: str | None = None) -> None:
        if dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {', '.join(TORCH_DTYPES)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.path, self.name = model, name or model
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype, self.batch_size, self.wanted_seq_length = dtype, batch_size, max_seq_length
        self.model = self.tokenizer = None
        self.forward_count = 0  # padded forward passes run since load; shows how well requests were merged

    @classmethod
    def from_spec(cls, spec, device: str | None = None) -> SentenceEmbedder:
        """The engine for a stack file's embedding entry; refuses a model that is only a shipped config here."""
        return cls(str(local_model_dir(spec)), device or spec_device(spec), spec.dtype, spec.batch_size, spec.max_seq_length, spec.name)

    def load(self) -> None:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.base.modules import Normalize

        model = SentenceTransformer(self.path, device=self.device, local_files_only=True,
                                    model_kwargs={"dtype": TORCH_DTYPES[self.dtype]})
        model.eval()
        self.tokenizer = model.tokenizer
        limit = self._position_limit(model)
        if self.wanted_seq_length is not None:
            if limit is not None and self.wanted_seq_length > limit:
                raise ValueError(f"model {self.name!r}: max_seq_length {self.wanted_seq_length} is more than the "
                                 f"model's {limit} positions; set max_seq_length to at most {limit}")
            model.max_seq_length = self.wanted_seq_length
        self.max_seq_length: int = model.max_seq_length or limit or self.tokenizer.model_max_length
        self.dimension: int = model.get_embedding_dimension()
        self.normalizes = any(isinstance(module, Normalize) for module in model)
        self.vocab_size = len(self.tokenizer)
        self.prefix, self.suffix = self._special_frame()
        self.model = model
        log.info("embedding model %s loaded on %s: %d dims, %d tokens per input, %s", self.name, self.device,
                 self.dimension, self.max_seq_length, self.dtype)

    def warmup(self) -> None:
        """A full batch at max_seq_length: the largest activation this engine will ever hold."""
        content = self.tokenizer(WARMUP_TOKEN, add_special_tokens=False)["input_ids"]
        length = self.max_seq_length - len(self.prefix) - len(self.suffix)
        row = self.prefix + (content * length)[:length] + self.suffix
        self.encode_ids([row] * self.batch_size)

    def close(self) -> None:
        if self.model is None:
            return
        self.model = None
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def embed(self, inputs: list[str] | list[list[int]], dimensions: int | None = None) -> EmbeddingResult:
        """Embed a list of texts or token arrays (the model's own token ids) in one go."""
        self.check_dimensions(dimensions)
        rows = self.tokenize(inputs)
        return EmbeddingResult(self.finish(self.encode_ids(rows), dimensions), sum(map(len, rows)))

    def check_dimensions(self, dimensions: int | None) -> None:
        if dimensions is not None and not 1 <= dimensions <= self.dimension:
            raise DimensionsError(f"dimensions {dimensions} is not possible for model {self.name!r}: it gives "
                                  f"vectors of {self.dimension}; ask for 1 to {self.dimension}, or leave it out")

    def tokenize(self, inputs: list[str] | list[list[int]]) -> list[list[int]]:
        """Each input as the ids the model reads; refuses (never truncates) one longer than max_seq_length."""
        texts = [i for i, item in enumerate(inputs) if isinstance(item, str)]
        encoded = self.tokenizer([inputs[i] for i in texts], verbose=False)["input_ids"] if texts else []
        rows = dict(zip(texts, encoded))
        for i, item in enumerate(inputs):
            if i not in rows:
                self._check_ids(i, item)
                rows[i] = self.prefix + list(item) + self.suffix
            if len(rows[i]) > self.max_seq_length:
                raise EmbeddingInputError(
                    f"input[{i}] is {len(rows[i])} tokens, but model {self.name!r} reads at most "
                    f"{self.max_seq_length} per input (special tokens included); shorten it or split it into "
                    f"several inputs")
        return [rows[i] for i in range(len(inputs))]

    def encode_ids(self, rows: list[list[int]]) -> np.ndarray:
        """Full-size float32 vectors for token-id rows, batch_size rows a pass, similar lengths padded together."""
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        out = np.empty((len(rows), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            out[chunk] = self._forward([rows[i] for i in chunk])
        return out

    def finish(self, vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
        """Cut to `dimensions` and, for a model that normalises, bring each vector back to unit length."""
        vectors = np.ascontiguousarray(vectors[:, :dimensions] if dimensions else vectors, dtype=np.float32)
        if self.normalizes:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def _forward(self, rows: list[list[int]]) -> np.ndarray:
        features = self.tokenizer.pad({"input_ids": rows}, return_tensors="pt")
        features = {key: value.to(self.model.device) for key, value in features.items()}
        with torch.inference_mode():
            vectors = self.model(features)["sentence_embedding"]
        self.forward_count += 1
        return vectors.float().cpu().numpy()

    def _check_ids(self, index: int, ids: list[int]) -> None:
        bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise EmbeddingInputError(f"input[{index}] has token id {bad}, but model {self.name!r} knows ids 0 to "
                                      f"{self.vocab_size - 1}; token arrays must hold this model's own token ids")

    def _special_frame(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts before and after any text, to frame token-array inputs alike."""
        bare = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("a")["input_ids"]
        for i in range(len(full) - len(bare) + 1):
            if full[i:i + len(bare)] == bare:
                return full[:i], full[i + len(bare):]
        raise ValueError(f"model {self.name!r}: cannot tell which special tokens its tokenizer adds around a text")

    @staticmethod
    def _position_limit(model) -> int | None:
        config = getattr(getattr(model[0], "auto_model", None), "config", None)
        return getattr(config, "max_position_embeddings", None)
