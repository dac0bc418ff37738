"""A model's rope settings and the context its positions cover, read in one place for the planner and the engine.

transformers 4 writes `rope_theta` and `rope_scaling`; transformers 5 writes the same facts as `rope_parameters`
(always present, `rope_type: default` when positions are not scaled).
"""
from __future__ import annotations

IN_PLACE = ("llama3", "longrope", "su")  # scalings whose max_position_embeddings already counts the scaled length


def rope_parameters(cfg: dict) -> dict:
    """The rope settings, whichever way the config writes them; rope_type is always set."""
    params = dict(cfg.get("rope_scaling") or {})
    params.update(cfg.get("rope_parameters") or {})
    params.setdefault("rope_theta", cfg.get("rope_theta", 10000.0))
    params["rope_type"] = params.get("rope_type") or params.get("type") or "default"
    return params


def max_context(cfg: dict) -> int:
    """Positions the model covers (0: the config does not say): max_position_embeddings, times the scaling factor
    where the rope scaling stretches positions beyond it (vLLM's rule)."""
    limit = int(cfg.get("max_position_embeddings") or 0)
    params = rope_parameters(cfg)
    kind, factor = params["rope_type"], float(params.get("factor") or 1.0)
    if not limit or kind == "default" or kind in IN_PLACE:
        return limit
    if kind == "yarn" and params.get("original_max_position_embeddings"):
        return int(params["original_max_position_embeddings"] * factor)
    return int(limit * factor)


def context_error(cfg: dict, max_model_len: int) -> str | None:
    """Why `max_model_len` is longer than the model's positions cover, or None when it fits."""
    limit = max_context(cfg)
    if not limit or max_model_len <= limit:
        return None
    params = rope_parameters(cfg)
    scaled = "" if params["rope_type"] == "default" else f" with its {params['rope_type']} rope scaling"
    return (f"max_model_len {max_model_len:,} is longer than the model covers{scaled} (max_position_embeddings "
            f"{int(cfg['max_position_embeddings']):,}); set max_model_len to {limit:,} or less")
