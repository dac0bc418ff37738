"""Build a model from a checkpoint: a Hugging Face folder (config.json plus safetensors, one file or sharded) or a
GGUF file (llama.cpp, Ollama). No random init: every parameter is loaded.

Both sources yield (Hugging Face name, tensor) pairs; one routine places them, stacking q/k/v and gate/up. A GGUF's
quantized weights stay quantized (QuantLinear, QuantEmbedding) unless `quantization` is "none"; a 16-bit folder's
projections are quantized tensor by tensor when it is "int8", "int4" or "fp8". Quantized modules are never materialized
dense: they stand as placeholders until their parts have arrived.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from budget.architectures import LLM_ARCHITECTURES
from budget.estimate import PlanInputError
from budget.gguf import (STACKED, close_gguf_readers, gguf_file, hf_name, kept_format, kept_modules, module_of,
                         open_gguf, read_gguf)
from engines.llm.models.decoder import CausalLM
from engines.llm.models.quant_linear import QuantEmbedding, QuantLinear
from engines.llm.models.quantization import (GGMLBlocks, QuantFormat, QuantizedTensor, from_awq, from_gguf, from_gptq,
                                             quantize, stack)
from engines.llm.models.safetensors_stream import read_tensors
from llm_kernels.cpu_extension import extension
from llm_kernels.dispatch import fp8_matmul_supported

QUANTIZATION = ("auto", "none", "int8", "int4", "fp8")  # auto: a GGUF as stored, a Hugging Face folder in its dtype
PROJECTIONS = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")  # packed per layer


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


def checkpoint_tensors(path: Path, cfg: dict, formats: dict[str, QuantFormat]
                       ) -> Iterator[tuple[str, str, torch.Tensor | QuantizedTensor | GGMLBlocks]]:
    """(file name, Hugging Face tensor name, tensor) for every tensor of the checkpoint, one at a time; a GGUF's
    quantized weights come in the stored form of their module's format in `formats`."""
    if (gguf := _gguf(path)) is not None:
        yield from _gguf_tensors(gguf, cfg, formats)
        return
    for file in safetensors_files(path):
        try:
            for name, tensor in read_tensors(file):
                yield file.name, name, tensor
        except ValueError as error:
            raise ModelLoadError(f"{path}: {error}") from None


def _gguf_names(reader, path: Path, cfg: dict) -> Iterator[tuple[object, str]]:
    """Each GGUF tensor (the reader's) with its Hugging Face name; llama3's rope factors are skipped (computed)."""
    for tensor in reader.tensors:
        if tensor.name == "rope_freqs.weight":
            continue
        try:
            yield tensor, hf_name(path, tensor.name, cfg["model_type"])
        except PlanInputError as error:
            raise ModelLoadError(str(error)) from None


def _gguf_reader(path: Path):
    try:
        return open_gguf(path)
    except PlanInputError as error:
        raise ModelLoadError(str(error)) from None


def _gguf_tensors(path: Path, cfg: dict, formats: dict[str, QuantFormat]
                  ) -> Iterator[tuple[str, str, torch.Tensor | QuantizedTensor | GGMLBlocks]]:
    """GGUF tensors under their Hugging Face names, llama.cpp's rope layout undone: quantized 2-D weights in our
    stored form when kept, everything else dequantized by the gguf package."""
    from gguf.quants import dequantize

    for tensor, name in _gguf_names(_gguf_reader(path), path, cfg):
        fmt = formats.get(module_of(name))
        kept = fmt is not None and len(tensor.shape) == 2 and kept_format(tensor.tensor_type.name) is not None
        try:
            if kept:
                shape = (int(tensor.shape[1]), int(tensor.shape[0]))  # GGUF lists dimensions innermost first
                values = from_gguf(tensor.data, tensor.tensor_type.name, shape, as_stored=fmt == QuantFormat.GGML)
            else:
                values = dequantize(tensor.data, tensor.tensor_type)
        except Exception as exc:  # a truncated file ends inside a tensor's data
            raise ModelLoadError(f"{path}: tensor {tensor.name!r} cannot be read ({exc}); the file is truncated or "
                                 "damaged: download or assemble it again") from None
        if cfg["model_type"] == "llama" and (".attn_q." in tensor.name or ".attn_k." in tensor.name):
            heads = cfg["num_attention_heads"] if ".attn_q." in tensor.name else cfg["num_key_value_heads"]
            if kept:
                values = values.rows(torch.from_numpy(_unpermute(np.arange(values.shape[0]), heads)))
            else:
                values = _unpermute(values, heads)
        if kept:
            yield path.name, name, values
            continue
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


def quantized_modules(path: Path, cfg: dict, quantization: str, device: torch.device) -> dict[str, QuantFormat]:
    """Which modules are kept quantized, and how: decided from the header before anything is allocated (a GGUF on
    the CPU keeps its own blocks where the C++ kernels built with AVX512-BF16)."""
    if quantization not in QUANTIZATION:
        raise ModelLoadError(f"quantization {quantization!r} is not one this engine serves; use one of "
                             f"{', '.join(QUANTIZATION)}")
    gguf = _gguf(path)
    if (scheme := prequantized(path, cfg)) is not None:
        if quantization != "auto":
            raise ModelLoadError(f"{path} is already quantized ({scheme['quant_method']}); it is served as stored, so "
                                 f"leave quantization at auto (it says {quantization!r})")
        return _projections(cfg, QuantFormat.INT4)
    if quantization in ("int8", "int4", "fp8"):
        if gguf is not None:
            raise ModelLoadError(f"{path}: quantization {quantization!r} is for 16-bit Hugging Face folders; a GGUF "
                                 "is served as it is stored (quantization: auto) or dequantized (none)")
        fmt = QuantFormat(quantization)
        if fmt == QuantFormat.FP8:  # vLLM's fp8: the projections; embeddings and head stay in the serving dtype
            return _projections(cfg, fmt)
        # embeddings and head as `fmt`; a tied head reads the embedding's rows, so both are int8 (the head's matmul
        # needs its kernel's layout, which a lookup cannot read)
        tied = bool(cfg.get("tie_word_embeddings"))
        tables = QuantFormat.INT8 if tied else fmt
        return {**_projections(cfg, fmt), "model.embed_tokens": tables, "lm_head": tables}
    if gguf is None or quantization == "none":
        return {}
    kernels = extension() if device.type == "cpu" else None
    on_cpu = kernels is not None and kernels.GGML_DIRECT  # else every step would widen: repacked for torch's kernels
    return {module: QuantFormat(fmt) for module, fmt in kept_modules(read_gguf(gguf), on_cpu).items()}


def _projections(cfg: dict, fmt: QuantFormat) -> dict[str, QuantFormat]:
    """Every layer's qkv, o, gate_up and down projection, as `fmt`."""
    return {f"model.layers.{i}.{name}": fmt for i in range(cfg["num_hidden_layers"]) for name in PROJECTIONS}


def prequantized(path: Path, cfg: dict) -> dict | None:
    """A checkpoint's `quantization_config` when it is one we serve (AWQ GEMM or GPTQ, 4-bit); else a clear error."""
    scheme = cfg.get("quantization_config")
    if not scheme:
        return None
    method, bits = scheme.get("quant_method"), scheme.get("bits", scheme.get("w_bit"))
    fix = ("serve an AWQ (version gemm) or GPTQ 4-bit checkpoint, a GGUF, or the 16-bit model with "
           "quantization: int4")
    if method not in ("awq", "gptq"):
        raise ModelLoadError(f"{path}/config.json: quantization_config.quant_method is {method!r}, which this engine "
                             f"does not read; {fix}")
    if bits != 4:
        raise ModelLoadError(f"{path}/config.json: quantization_config.bits is {bits!r}; only 4-bit {method.upper()} "
                             f"is served; {fix}")
    if method == "awq" and str(scheme.get("version", "gemm")).lower() != "gemm":
        raise ModelLoadError(f"{path}/config.json: quantization_config.version is {scheme.get('version')!r}; AWQ is "
                             f"read in its GEMM layout only; {fix}")
    if method == "gptq" and (scheme.get("is_marlin_format") or "marlin" in str(scheme.get("checkpoint_format", ""))):
        raise ModelLoadError(f"{path}/config.json: quantization_config names the Marlin layout, which only Marlin "
                             f"kernels read; {fix}")
    if method == "awq" and not scheme.get("zero_point", True):
        raise ModelLoadError(f"{path}/config.json: quantization_config.zero_point is false; {fix}")
    return scheme


def _from_prequantized(scheme: dict, pieces: dict[str, torch.Tensor], inputs: int) -> QuantizedTensor:
    """One layer's AWQ or GPTQ tensors (qweight, qzeros, scales, g_idx) in our int4 form."""
    group = scheme.get("group_size", scheme.get("q_group_size", 128))
    group = inputs if group in (-1, None) else int(group)
    if scheme["quant_method"] == "awq":
        return from_awq(pieces["qweight"], pieces["qzeros"], pieces["scales"], group)
    zero_offset = 0 if scheme.get("checkpoint_format") == "gptq_v2" else 1
    return from_gptq(pieces["qweight"], pieces["qzeros"], pieces["scales"], pieces.get("g_idx"), group, zero_offset)


def load_model(path: str | Path, dtype: torch.dtype, device: torch.device, quantization: str = "auto",
               max_model_len: int = 0) -> CausalLM:
    """The model on `device`, every parameter from the checkpoint; rotary positions cover `max_model_len` too."""
    path = Path(path)
    cfg = read_config(path)
    formats = quantized_modules(path, cfg, quantization, device)
    if quantization == "fp8" and not fp8_matmul_supported(device):
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"the {device.type}"
        raise ModelLoadError(f"quantization fp8 needs a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper, "
                             f"Blackwell), and this model is served on {where}; use int8 (the same bytes, served "
                             f"everywhere) or int4")
    with torch.device("meta"):
        model = CausalLM(cfg)
    biased = {name: getattr(model.get_submodule(name), "bias", None) is not None for name in formats}
    for name in formats:  # placeholders: nothing is allocated for a module that stays quantized
        _replace(model, name, nn.Identity())
    model.to(dtype)  # still on meta: each tensor is then made once, in the serving dtype, never float32 first
    model.to_empty(device=device)
    if cfg.get("tie_word_embeddings") and "lm_head" not in formats:  # to_empty gives each its own tensor
        model.lm_head.weight = model.model.embed_tokens.weight
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded: set[str] = set()
    parts: dict[str, dict[int, QuantizedTensor | GGMLBlocks]] = {}
    biases: dict[str, dict[int, torch.Tensor]] = {}
    scheme = prequantized(path, cfg)
    pieces: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
    for file, name, tensor in checkpoint_tensors(path, cfg, formats):
        if name.endswith("rotary_emb.inv_freq") or (name == "lm_head.weight" and cfg.get("tie_word_embeddings")):
            continue
        module, _, leaf = name.rpartition(".")
        prefix, _, last = module.rpartition(".")
        if (target_module := module_of(name)) in formats:
            part = STACKED[last][1] if last in STACKED else 0
            if leaf in ("qweight", "qzeros", "scales", "g_idx"):
                pieces.setdefault((target_module, part), {})[leaf] = tensor
            elif leaf == "bias":
                biases.setdefault(target_module, {})[part] = tensor
            else:
                if isinstance(tensor, torch.Tensor):
                    tensor = quantize(tensor, formats[target_module])
                parts.setdefault(target_module, {})[part] = tensor
            continue
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
    for (target_module, part), found in pieces.items():
        if not {"qweight", "qzeros", "scales"} <= set(found):
            missing = sorted({"qweight", "qzeros", "scales"} - set(found))
            raise ModelLoadError(f"{path}: {target_module} part {part} lacks {missing}")
        inputs = found["qweight"].shape[0] * (8 if scheme["quant_method"] == "gptq" else 1)
        try:
            parts.setdefault(target_module, {})[part] = _from_prequantized(scheme, found, inputs)
        except ValueError as error:
            raise ModelLoadError(f"{path}: {target_module}: {error}") from None
    _build_quantized(model, cfg, formats, parts, biases, biased, dtype, device, path)
    del parts, pieces, biases  # the unpacked codes: packed copies now live in the modules
    missing = [n for n, p in params.items() if n not in loaded and not _stacked_complete(n, p, loaded, cfg)]
    if cfg.get("tie_word_embeddings"):
        missing = [n for n in missing if n != "lm_head.weight"]
    if missing:
        raise ModelLoadError(f"{path}: the checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
    model.model.rotary.build(device, max_model_len)
    close_gguf_readers()  # the file's pages would otherwise stay mapped (and resident) for the worker's life
    _return_freed_memory()
    if device.type == "cuda":  # the caching allocator would keep the load's freed scratch as reserved memory
        torch.cuda.empty_cache()
    return model.eval()


def _return_freed_memory() -> None:
    """Hand the load's freed scratch back to the OS: glibc keeps it otherwise (2.1 GiB after the packed Qwen 0.5B)."""
    import ctypes
    import ctypes.util

    if (libc := ctypes.util.find_library("c")) is not None and hasattr(ctypes.CDLL(libc), "malloc_trim"):
        ctypes.CDLL(libc).malloc_trim(0)


def _build_quantized(model: CausalLM, cfg: dict, formats: dict[str, QuantFormat],
                     parts: dict[str, dict[int, QuantizedTensor | GGMLBlocks]],
                     biases: dict[str, dict[int, torch.Tensor]],
                     biased: dict[str, bool], dtype: torch.dtype, device: torch.device, path: Path) -> None:
    """Swap each placeholder for its quantized module, once all its parts (q/k/v, gate/up) have arrived."""
    for name, fmt in formats.items():
        if name == "lm_head" and cfg.get("tie_word_embeddings"):
            continue
        count = 3 if name.endswith("qkv_proj") else 2 if name.endswith("gate_up_proj") else 1
        got = parts.get(name, {})
        if len(got) != count:
            raise ModelLoadError(f"{path}: the checkpoint lacks parts of {name} ({len(got)} of {count} found)")
        weight = stack([got[i] for i in range(count)])
        if weight.format == QuantFormat.INT4 and fmt == QuantFormat.INT8:  # tied embeddings; a stack with int8 parts
            weight = quantize(weight.dequantize(), fmt)
        if name == "model.embed_tokens":
            _replace(model, name, QuantEmbedding(weight, dtype, device))
            continue
        bias = None
        if biased[name]:
            found = biases.get(name, {})
            if len(found) != count:
                raise ModelLoadError(f"{path}: the checkpoint lacks the bias of {name}")
            bias = torch.cat([found[i] for i in range(count)]).to(dtype)
        _replace(model, name, QuantLinear(weight, bias, device))
    if "lm_head" in formats and cfg.get("tie_word_embeddings"):
        _replace(model, "lm_head", QuantLinear.sharing(model.model.embed_tokens))


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def _stacked_complete(name: str, param: torch.Tensor, loaded: set[str], cfg: dict) -> bool:
    stacked = name.split(".")[-2]
    if stacked not in ("qkv_proj", "gate_up_proj"):
        return False
    return all(f"{name}#{i}" in loaded for i in range(len(_parts(param, f"{stacked}.x", cfg))))
