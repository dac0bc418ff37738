"""Text embedder (sentence-transformers, BERT family): weights and one full batch at max_seq_length."""
from __future__ import annotations

from budget.architectures import bert_parameters
from budget.model_files import find_model_files
from budget.estimate import Estimate, PlanInputError, context_bytes
from budget.estimators.weights import checkpoint_weights
from budget.units import dtype_bytes, human

ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "mpnet", "distilbert", "nomic_bert", "modernbert")


def estimate_embedding(spec, on_gpu: bool) -> Estimate:
    files = find_model_files(spec.name, spec.path, spec.config)
    cfg = files.json("config.json")
    if cfg is None or "hidden_size" not in cfg:
        raise PlanInputError(f"model {spec.name!r}: {files.describe()} has no transformer config.json; point "
                             "path at a sentence-transformers model directory")
    b = dtype_bytes(spec.dtype)
    if files.config_only and cfg.get("model_type") not in ENCODER_TYPES:
        raise PlanInputError(f"model {spec.name!r}: config {files.directory.name} is not a BERT-family encoder")
    params, weights, formula = checkpoint_weights(spec.name, files, spec.dtype, lambda: bert_parameters(cfg))
    formulas = {"weights": formula}
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
