"""GGUF files (llama.cpp, Ollama) read from their header alone: the Hugging Face config they stand for, and sizes.

The planner and the LLM engine both take a GGUF's config from here, so they agree on what the model is.
Only the header and tensor index are read (the `gguf` package memory-maps the file); no torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from budget.estimate import PlanInputError

GGUF_ARCHITECTURES = ("llama", "qwen2", "qwen3")  # GGUF's general.architecture → our model_type, same names


@dataclass(frozen=True, slots=True)
class GGUFHeader:
    path: Path
    architecture: str
    config: dict[str, Any]     # Hugging Face config.json keys, as the engine's decoder reads them
    parameters: int            # every tensor's element count, whatever its quantization
    file_bytes: int
    quantization: str          # the most common tensor type, e.g. Q4_K


def gguf_file(path: Path) -> Path | None:
    """The .gguf a path names: the file itself, or the one .gguf in a folder; None when there is none."""
    if path.is_file():
        return path if path.suffix == ".gguf" else None
    found = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if len(found) > 1:
        raise PlanInputError(f"{path} holds {len(found)} .gguf files ({', '.join(f.name for f in found)}); point "
                             "path at the one to serve")
    return found[0] if found else None


def read_gguf(path: Path) -> GGUFHeader:
    """The header of a GGUF file; errors name the file and what to do."""
    from collections import Counter

    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as exc:  # a truncated or foreign file fails deep inside the reader
        raise PlanInputError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc}); it may be "
                             "truncated or not a GGUF at all: download or assemble it again") from None
    fields = {name: _value(field) for name, field in reader.fields.items()
              if not name.startswith("tokenizer.ggml.") or name.endswith("_id")}
    arch = fields.get("general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise PlanInputError(f"{path}: GGUF architecture {arch!r} is not served by the LLM engine (it serves "
                             f"{', '.join(GGUF_ARCHITECTURES)}); use a Llama, Qwen2 or Qwen3 model file")
    names = {t.name: t for t in reader.tensors}
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = fields.get(f"{arch}.vocab_size") or (len(tokens.data) if tokens is not None else None)
    if vocab is None and "token_embd.weight" in names:
        vocab = int(names["token_embd.weight"].shape[1])

    def need(key: str) -> Any:
        value = fields.get(f"{arch}.{key}")
        if value is None:
            raise PlanInputError(f"{path}: the GGUF metadata lacks {arch}.{key}; the file is incomplete or was made "
                                 "by a converter this engine does not know")
        return value

    heads = int(need("attention.head_count"))
    config: dict[str, Any] = {
        "model_type": arch,
        "hidden_size": int(need("embedding_length")),
        "intermediate_size": int(need("feed_forward_length")),
        "num_hidden_layers": int(need("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(fields.get(f"{arch}.attention.head_count_kv") or heads),
        "max_position_embeddings": int(need("context_length")),
        "rms_norm_eps": float(need("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(fields.get(f"{arch}.rope.freq_base") or 10000.0),
        "vocab_size": int(vocab),
        "tie_word_embeddings": "output.weight" not in names,
        "attention_bias": False,
    }
    if (key_length := fields.get(f"{arch}.attention.key_length")) is not None:
        config["head_dim"] = int(key_length)
    for key in ("bos_token_id", "eos_token_id"):
        source = f"tokenizer.ggml.{key}"
        if source in fields:
            config[key] = int(fields[source])
    if fields.get(f"{arch}.rope.scaling.type") not in (None, "none"):
        raise PlanInputError(f"{path}: rope scaling {fields[f'{arch}.rope.scaling.type']!r} in a GGUF is not "
                             "supported yet; use a model without it, or its safetensors checkpoint")
    kinds = Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) > 1)
    return GGUFHeader(path, arch, config, int(sum(int(t.n_elements) for t in reader.tensors)), path.stat().st_size,
                      kinds.most_common(1)[0][0] if kinds else "F32")


def _value(field) -> Any:
    try:
        return field.contents()
    except Exception:  # a field type the reader cannot decode is one we do not need
        return None
