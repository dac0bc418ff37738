"""Build a model from a Hugging Face folder: config.json plus safetensors (one file or sharded), no random init."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from budget.architectures import LLM_ARCHITECTURES
from engines.llm.models.decoder import CausalLM

STACKED = {  # checkpoint name -> (our stacked parameter, which part)
    "q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
}


class ModelLoadError(ValueError):
    """The folder is not a checkpoint this engine can serve; the message says why and what to do."""


def read_config(path: Path) -> dict:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{path} has no config.json; point the model's path at a Hugging Face model folder")
    cfg = json.loads(config_file.read_text())
    if cfg.get("model_type") not in LLM_ARCHITECTURES:
        raise ModelLoadError(f"{path}: model_type {cfg.get('model_type')!r} is not served by the LLM engine "
                             f"(supported: {', '.join(LLM_ARCHITECTURES)})")
    if cfg.get("use_sliding_window"):
        raise ModelLoadError(f"{path}: sliding-window attention is not supported; set use_sliding_window false")
    return cfg


def safetensors_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return sorted({path / name for name in json.loads(index.read_text())["weight_map"].values()})
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{path} has no *.safetensors weights (.bin checkpoints are not read; convert them)")
    return files


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
    for file in safetensors_files(path):
        with safe_open(file, framework="pt", device="cpu") as f:
            for name in f.keys():
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
                    raise ModelLoadError(f"{file.name}: tensor {name!r} has no place in a {cfg['model_type']} model")
                tensor = f.get_tensor(name)
                if tuple(tensor.shape) != tuple(target.shape):
                    raise ModelLoadError(f"{file.name}: tensor {name!r} has shape {tuple(tensor.shape)}, the config "
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
