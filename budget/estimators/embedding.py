"""Text embedder (sentence-transformers, BERT family): weights and one full batch at max_seq_length."""
from __future__ import annotations

from budget.architectures import bert_parameters
from budget.cards import find_model_files
from budget.estimate import Estimate, PlanInputError, context_bytes
from budget.tensors import converted_bytes, read_safetensors_dir
from budget.units import dtype_bytes, human

ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "mpnet", "distilbert", "nomic_bert", "modernbert")


def estimate_embedding(spec, on_gpu: bool) -> Estimate:
    files = find_model_files(spec.name, spec.path, spec.card)
    cfg = files.json("config.json")
    if cfg is None or "hidden_size" not in cfg:
        raise PlanInputError(f"model {spec.name!r}: {files.describe()} has no transformer config.json; point "
                             "path at a sentence-transformers model directory")
    b = dtype_bytes(spec.dtype)
    tensors = [] if files.is_card else read_safetensors_dir(files.directory)
    formulas: dict[str, str] = {}
    if tensors:
        params = sum(t.numel for t in tensors if t.is_float)
        weights = converted_bytes(tensors, spec.dtype)
        formulas["weights"] = f"{params:,} parameters from safetensors headers in {spec.dtype} = {human(weights)}"
    elif files.is_card and cfg.get("model_type") in ENCODER_TYPES:
        params = bert_parameters(cfg)
        weights = int(params * b)
        formulas["weights"] = f"{params:,} parameters from config × {b:g} B ({spec.dtype}) = {human(weights)}"
    else:
        raise PlanInputError(f"model {spec.name!r}: {files.directory} has no *.safetensors weights to size")
    st_cfg = files.json("sentence_bert_config.json") or {}
    length = spec.max_seq_length or st_cfg.get("max_seq_length") or min(512, cfg.get("max_position_embeddings", 512))
    h, inter, heads, batch = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"], spec.batch_size
    hidden = batch * length * (4 * h + inter) * b
    scores = 2 * batch * heads * length**2 * b
    activation = int(hidden + scores)
    formulas["activations"] = (f"batch {batch} × {length} tokens: hidden, qkv and FFN {human(hidden)} + "
                               f"{heads}-head scores and softmax {human(scores)} = {human(activation)}")
    context, formulas["context"] = context_bytes("torch", on_gpu)
    return Estimate(spec.name, "embedding", files.describe(), "torch", params, weights, activation, context,
                    dtype=spec.dtype, formulas=formulas)
