"""GGUF files (llama.cpp, Ollama) read from their header alone: the Hugging Face config they stand for, and sizes.

The planner and the LLM engine both take a GGUF's config, its tensors' names and how each weight is kept
(int4 groups, int8 rows, or dense) from here, so they agree on what the model is and what it weighs.
Only the header and tensor index are read (the `gguf` package memory-maps the file); no torch.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from budget.estimate import PlanInputError

GGUF_ARCHITECTURES = ("llama", "qwen2", "qwen3")  # GGUF's general.architecture → our model_type, same names
GGUF_NAMES = {  # llama.cpp's tensor names -> Hugging Face's, per layer ({} is the layer's index)
    "token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{}.attn_norm.weight": "model.layers.{}.input_layernorm.weight",
    "blk.{}.ffn_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
    "blk.{}.attn_q.weight": "model.layers.{}.self_attn.q_proj.weight",
    "blk.{}.attn_q.bias": "model.layers.{}.self_attn.q_proj.bias",
    "blk.{}.attn_k.weight": "model.layers.{}.self_attn.k_proj.weight",
    "blk.{}.attn_k.bias": "model.layers.{}.self_attn.k_proj.bias",
    "blk.{}.attn_v.weight": "model.layers.{}.self_attn.v_proj.weight",
    "blk.{}.attn_v.bias": "model.layers.{}.self_attn.v_proj.bias",
    "blk.{}.attn_output.weight": "model.layers.{}.self_attn.o_proj.weight",
    "blk.{}.attn_q_norm.weight": "model.layers.{}.self_attn.q_norm.weight",
    "blk.{}.attn_k_norm.weight": "model.layers.{}.self_attn.k_norm.weight",
    "blk.{}.ffn_gate.weight": "model.layers.{}.mlp.gate_proj.weight",
    "blk.{}.ffn_up.weight": "model.layers.{}.mlp.up_proj.weight",
    "blk.{}.ffn_down.weight": "model.layers.{}.mlp.down_proj.weight",
}
STACKED = {  # Hugging Face module name -> (our stacked module, which part)
    "q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
}
# How the engine keeps a quantized GGUF weight on the CPU: as the file stores it, llama.cpp's blocks multiplied as they
# are (llm_kernels/ggml_matmul.cpp), for a module whose weights are all of these types.
GGML_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K")
# Elsewhere (CUDA, or a CPU where the C++ kernels did not build or that lacks AVX512-BF16): int4 groups of 32
# (these repack code for code) or int8 rows.
INT4_TYPES = ("Q4_0", "Q4_1", "Q4_K")
INT8_TYPES = ("Q8_0", "Q5_0", "Q5_1", "Q5_K", "Q6_K")
INT4_GROUP = 32
SCALE_BYTES = 2  # bfloat16 scales (and int4 zeros)
DEQUANT_ROWS = 4096  # the dequantize-then-matmul path (GPU int8, CPU prefill) widens this many weight rows at a time
# From how many rows a float32 CPU step widens packed weights rather than take torch's bfloat16 kernels, by format:
# where it stops costing time (bench/quantized_prefill.py, 2 cores: int8 rows 10-14% sooner from 384 rows; int4
# groups 20% later at 512, even at 1024-2048).
# GGML blocks: a smaller step multiplies them directly (ggml_matmul.cpp), this many rows or more widen them (the
# crossover, bench/quantized_prefill.py on 2 cores: between 32 and 48 prompt tokens on both demo files).
DEQUANTIZE_FROM_ROWS = {"int4": 2048, "int8": 384, "ggml": 40}
_LAYER = re.compile(r"\.(\d+)\.")


@dataclass(frozen=True, slots=True)
class GGUFTensor:
    name: str                  # llama.cpp's
    hf_name: str               # Hugging Face's, as the decoder names it
    type_name: str             # e.g. Q4_K, F32
    shape: tuple[int, ...]     # rows first (GGUF lists dimensions innermost first; this is reversed)
    n_bytes: int               # stored bytes in the file


@dataclass(frozen=True, slots=True)
class GGUFHeader:
    path: Path
    architecture: str
    config: dict[str, Any]     # Hugging Face config.json keys, as the engine's decoder reads them
    parameters: int            # every tensor's element count, whatever its quantization
    file_bytes: int
    quantization: str          # the most common tensor type, e.g. Q4_K
    tensors: tuple[GGUFTensor, ...]

    @property
    def tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)


def is_gguf(path: Path) -> bool:
    """A .gguf file, or a file that starts with GGUF's magic (Ollama's blobs are named by digest, not suffix)."""
    if path.suffix == ".gguf":
        return True
    try:
        with path.open("rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def gguf_file(path: Path) -> Path | None:
    """The GGUF a path names: the file itself, or the one .gguf in a folder; None when there is none."""
    if path.is_file():
        return path if is_gguf(path) else None
    found = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if len(found) > 1:
        raise PlanInputError(f"{path} holds {len(found)} .gguf files ({', '.join(f.name for f in found)}); point "
                             "path at the one to serve")
    return found[0] if found else None


def open_gguf(path: Path):
    """The gguf package's reader of a file, parsed once per process (parsing a 150k-token vocabulary takes seconds);
    a file changed on disk is read again."""
    stat = path.stat()
    return _reader(path.resolve(), stat.st_mtime_ns, stat.st_size)


def close_gguf_readers() -> None:
    """Drop the parsed readers, and with them their mappings of the files (a loaded model holds copies)."""
    _reader.cache_clear()


@functools.lru_cache(maxsize=4)
def _reader(path: Path, mtime_ns: int, size: int):
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except Exception as exc:  # a truncated or foreign file fails deep inside the reader
        raise PlanInputError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc}); it may be "
                             "truncated or not a GGUF at all: download or assemble it again") from None


def read_gguf(path: Path) -> GGUFHeader:
    """The header of a GGUF file; errors name the file and what to do."""
    from collections import Counter

    reader = open_gguf(path)
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
    tensors = tuple(GGUFTensor(t.name, hf_name(path, t.name, arch), t.tensor_type.name,
                               tuple(int(d) for d in reversed(t.shape)), int(t.n_bytes))
                    for t in reader.tensors if t.name != "rope_freqs.weight")  # llama3's: computed from the config
    return GGUFHeader(path, arch, config, int(sum(int(t.n_elements) for t in reader.tensors)), path.stat().st_size,
                      kinds.most_common(1)[0][0] if kinds else "F32", tensors)


def hf_name(path: Path, name: str, arch: str) -> str:
    layer = _LAYER.search(name)
    pattern = name.replace(f".{layer.group(1)}.", ".{}.", 1) if layer else name
    if pattern not in GGUF_NAMES:
        raise PlanInputError(f"{path.name}: tensor {name!r} has no place in a {arch} model; the file is not a "
                             "plain Llama / Qwen2 / Qwen3 checkpoint")
    return GGUF_NAMES[pattern].format(layer.group(1)) if layer else GGUF_NAMES[pattern]


def module_of(hf_tensor_name: str) -> str:
    """The module of our decoder a checkpoint tensor lands in (q/k/v in qkv_proj, gate/up in gate_up_proj)."""
    module = hf_tensor_name.rpartition(".")[0]
    prefix, _, last = module.rpartition(".")
    return f"{prefix}.{STACKED[last][0]}" if last in STACKED else module


def kept_format(type_name: str) -> str | None:
    """"int4", "int8", or None (a float type: served dense in the serving dtype)."""
    return "int4" if type_name in INT4_TYPES else "int8" if type_name in INT8_TYPES else None


@functools.cache
def cpu_multiplies_blocks() -> bool:
    """Whether this CPU multiplies GGML blocks directly (AVX512-BF16, llm_kernels/ggml_matmul.cpp). Without it every
    step would widen whole weights, so the engine repacks a GGUF for torch's int4/int8 kernels there instead."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: plan the repacked formats, as the engine's build there has no direct path either
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return {"avx512_bf16", "avx512bw", "avx512vl"} <= set(flags)


def kept_modules(header: GGUFHeader, on_cpu: bool = False) -> dict[str, str]:
    """Which modules stay quantized and how. On the CPU, a module whose weights are all GGML_TYPES keeps the file's
    blocks ("ggml"; a tied LM head reads the embedding's). Otherwise a stack with any int8 part is int8; embeddings
    keep their int4 groups or int8 rows (a lookup reads single rows of either), except under a tied LM head, which
    shares them as int8 rows (its matmul needs the kernel's layout, which a lookup cannot read)."""
    types: dict[str, set[str]] = {}
    for t in header.tensors:
        if len(t.shape) == 2:
            types.setdefault(module_of(t.hf_name), set()).add(t.type_name)
    formats: dict[str, str] = {}
    for module, held in types.items():
        kept = {kept_format(t) for t in held} - {None}
        if on_cpu and held <= set(GGML_TYPES):
            formats[module] = "ggml"
        elif kept:
            formats[module] = "int8" if "int8" in kept else "int4"
    embedding = formats.get("model.embed_tokens")
    if embedding is not None and header.config.get("tie_word_embeddings"):
        formats["model.embed_tokens"] = formats["lm_head"] = "ggml" if embedding == "ggml" else "int8"
    return formats


def quantized_bytes(fmt: str, rows: int, cols: int) -> int:
    """Bytes the engine holds for one kept weight: int4 codes two a byte plus a scale and a zero per group of 32;
    int8 codes plus a scale per row; fp8 codes plus a float32 scale per row."""
    if fmt == "int4":
        return rows * cols // 2 + rows * (cols // INT4_GROUP) * 2 * SCALE_BYTES
    return rows * cols + rows * (4 if fmt == "fp8" else SCALE_BYTES)


def served_weight_bytes(header: GGUFHeader, dtype_bytes: float, on_cpu: bool = False) -> tuple[int, dict[str, int]]:
    """Exactly what the engine holds for this file's weights when it keeps them quantized, and the bytes by format
    (a tied LM head has no tensor in the file and no bytes of its own: it reads the embedding's rows)."""
    formats = kept_modules(header, on_cpu)
    by_format: dict[str, int] = {}
    for t in header.tensors:
        module = module_of(t.hf_name)
        fmt = formats.get(module) if len(t.shape) == 2 else None
        size = (t.n_bytes if fmt == "ggml" else quantized_bytes(fmt, *t.shape) if fmt
                else int(_elements(t.shape) * dtype_bytes))
        by_format[fmt or "dense"] = by_format.get(fmt or "dense", 0) + size
    return sum(by_format.values()), by_format


def _elements(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _value(field) -> Any:
    try:
        return field.contents()
    except Exception:  # a field type the reader cannot decode is one we do not need
        return None
