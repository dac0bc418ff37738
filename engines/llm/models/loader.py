"""Build a model from a checkpoint: a Hugging Face folder (config.json plus safetensors, one file or sharded) or a
GGUF file (llama.cpp, Ollama), dequantized into the serving dtype. No random init: every parameter is loaded.

Both sources yield (Hugging Face name, tensor) pairs; one routine places them, stacking q/k/v and gate/up.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from budget.architectures import LLM_ARCHITECTURES
from budget.estimate import PlanInputError
from budget.gguf import gguf_file, read_gguf
from engines.llm.models.decoder import CausalLM

STACKED = {  # checkpoint name -> (our stacked parameter, which part)
    "q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
}
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
_LAYER = re.compile(r"\.(\d+)\.")


class ModelLoadError(ValueError):
    """The checkpoint is not one this engine can serve; the message says why and what to do."""


def read_config(path: Path) -> dict:
    """The Hugging Face config of a folder's config.json, or of a GGUF's header."""
    if (gguf := _gguf(path)) is not None:
        return _checked(path, read_gguf(gguf).config)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{path} has no config.json and no .gguf file; point the model's path at a Hugging "
                             "Face model folder or a GGUF file")
    return _checked(path, json.loads(config_file.read_text()))


def _checked(path: Path, cfg: dict) -> dict:
    if cfg.get("model_type") not in LLM_ARCHITECTURES:
        raise ModelLoadError(f"{path}: model_type {cfg.get('model_type')!r} is not served by the LLM engine "
                             f"(supported: {', '.join(LLM_ARCHITECTURES)})")
    if cfg.get("use_sliding_window"):
        raise ModelLoadError(f"{path}: sliding-window attention is not supported; set use_sliding_window false")
    return cfg


def _gguf(path: Path) -> Path | None:
    try:
        return gguf_file(path)
    except PlanInputError as error:
        raise ModelLoadError(str(error)) from None


def safetensors_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return sorted({path / name for name in json.loads(index.read_text())["weight_map"].values()})
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{path} has no *.safetensors weights (.bin checkpoints are not read; convert them)")
    return files


def checkpoint_tensors(path: Path, cfg: dict) -> Iterator[tuple[str, str, torch.Tensor]]:
    """(file name, Hugging Face tensor name, tensor) for every tensor of the checkpoint, one at a time."""
    if (gguf := _gguf(path)) is not None:
        yield from _gguf_tensors(gguf, cfg)
        return
    for file in safetensors_files(path):
        with safe_open(file, framework="pt", device="cpu") as f:
            for name in f.keys():
                yield file.name, name, f.get_tensor(name)


def _gguf_tensors(path: Path, cfg: dict) -> Iterator[tuple[str, str, torch.Tensor]]:
    """GGUF tensors under their Hugging Face names, dequantized by the gguf package, llama.cpp's rope layout undone."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    try:
        reader = GGUFReader(path)
    except Exception as exc:
        raise ModelLoadError(f"{path} is not a readable GGUF file ({exc}); download or assemble it again") from None
    for tensor in reader.tensors:
        if tensor.name == "rope_freqs.weight":  # llama3 rope factors: we compute them from the config
            continue
        layer = _LAYER.search(tensor.name)
        pattern = tensor.name.replace(f".{layer.group(1)}.", ".{}.", 1) if layer else tensor.name
        if pattern not in GGUF_NAMES:
            raise ModelLoadError(f"{path.name}: tensor {tensor.name!r} has no place in a {cfg['model_type']} model")
        name = GGUF_NAMES[pattern].format(layer.group(1)) if layer else GGUF_NAMES[pattern]
        try:
            values = dequantize(tensor.data, tensor.tensor_type)
        except Exception as exc:  # a truncated file ends inside a tensor's data
            raise ModelLoadError(f"{path}: tensor {tensor.name!r} cannot be read ({exc}); the file is truncated or "
                                 "damaged: download or assemble it again") from None
        if cfg["model_type"] == "llama" and (".attn_q." in tensor.name or ".attn_k." in tensor.name):
            heads = cfg["num_attention_heads"] if ".attn_q." in tensor.name else cfg["num_key_value_heads"]
            values = _unpermute(values, heads)
        if not values.flags.writeable or not values.flags.c_contiguous:  # F32/F16 tensors are views of the file
            values = np.array(values)
        yield path.name, name, torch.from_numpy(values)


def _unpermute(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp stores each head's q/k rows interleaved for its rope; put them back in Hugging Face's halves."""
    half = weights.shape[0] // heads // 2
    return weights.reshape(heads, half, 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _parts(param: torch.Tensor, name: str, cfg: dict) -> list[int]:
    if name.startswith("qkv_proj"):
        heads, kv_heads = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
        per_head = param.shape[0] // (heads + 2 * kv_heads)
        return [heads * per_head, kv_heads * per_head, kv_heads * per_head]
    return [param.shape[0] // 2] * 2


def load_model(path: str | Path, dtype: torch.dtype, device: torch.device) -> CausalLM:
    path = Path(path)
    cfg = read_config(path)
    with torch.device("meta"):
        model = CausalLM(cfg)
    model.to_empty(device=device)
    model.to(dtype)
    if cfg.get("tie_word_embeddings"):  # to_empty gives each module its own tensor: share them again
        model.lm_head.weight = model.model.embed_tokens.weight
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded: set[str] = set()
    for file, name, tensor in checkpoint_tensors(path, cfg):
        if name.endswith("rotary_emb.inv_freq") or (name == "lm_head.weight" and cfg.get("tie_word_embeddings")):
            continue
        module, _, leaf = name.rpartition(".")
        prefix, _, last = module.rpartition(".")
        target = params.get(name)
        if last in STACKED:
            stacked, part = STACKED[last]
            target_name = f"{prefix}.{stacked}.{leaf}"
            target = params.get(target_name)
            if target is not None:
                sizes = _parts(target, f"{stacked}.{leaf}", cfg)
                target = target.data.narrow(0, sum(sizes[:part]), sizes[part])
                loaded.add(f"{target_name}#{part}")
        else:
            loaded.add(name)
        if target is None:
            raise ModelLoadError(f"{file}: tensor {name!r} has no place in a {cfg['model_type']} model")
        if tuple(tensor.shape) != tuple(target.shape):
            raise ModelLoadError(f"{file}: tensor {name!r} has shape {tuple(tensor.shape)}, the config "
                                 f"implies {tuple(target.shape)}")
        target.data.copy_(tensor)
    missing = [n for n, p in params.items() if n not in loaded and not _stacked_complete(n, p, loaded, cfg)]
    if cfg.get("tie_word_embeddings"):
        missing = [n for n in missing if n != "lm_head.weight"]
    if missing:
        raise ModelLoadError(f"{path}: the checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
    model.model.rotary.build(device)
    return model.eval()


def _stacked_complete(name: str, param: torch.Tensor, loaded: set[str], cfg: dict) -> bool:
    stacked = name.split(".")[-2]
    if stacked not in ("qkv_proj", "gate_up_proj"):
        return False
    return all(f"{name}#{i}" in loaded for i in range(len(_parts(param, f"{stacked}.x", cfg))))
