"""float8 e4m3 needs a CUDA card of compute capability 8.9 or newer (Ada, Hopper, Blackwell): Triton cannot compile
its conversions below that (the 24 GB presets' RTX 3090 and A10G are 8.6), nor does torch's fp8 matmul run there.
e5m2 converts on every card, so a KV cache asked for as plain `fp8` is held as e5m2 there (the same bytes)."""
from __future__ import annotations

E4M3_CAPABILITY = (8, 9)


def _version(capability: tuple[int, int]) -> str:
    return f"{capability[0]}.{capability[1]}"


def kv_cache_dtype_for(requested: str, capability: tuple[int, int] | None) -> str:
    """The KV cache dtype served on a card of this capability (None: not a CUDA card, or not known)."""
    if requested not in ("fp8", "fp8_e4m3") or capability is None or capability >= E4M3_CAPABILITY:
        return requested
    if requested == "fp8":
        return "fp8_e5m2"
    raise ValueError(f"kv_cache_dtype fp8_e4m3 needs compute capability {_version(E4M3_CAPABILITY)} or newer, and "
                     f"this card is {_version(capability)}; use fp8_e5m2 (the same bytes) or fp8, held as e5m2 here")


def card_checks(spec, capability: tuple[int, int] | None, card: str) -> tuple[list[str], list[str]]:
    """(problems, notes) for an LLM entry on a card of this capability: what its fp8 settings become there."""
    problems, notes = [], []
    if capability is None or getattr(spec, "kind", None) != "llm":
        return problems, notes
    try:
        served = kv_cache_dtype_for(spec.kv_cache_dtype, capability)
    except ValueError as error:
        problems.append(f"model {spec.name!r} on {card}: {error}")
    else:
        if served != spec.kv_cache_dtype:
            notes.append(f"{spec.name}: kv_cache_dtype fp8 is held as {served} on {card} (compute capability "
                         f"{_version(capability)}; e4m3 needs {_version(E4M3_CAPABILITY)})")
    if getattr(spec, "quantization", None) == "fp8" and capability < E4M3_CAPABILITY:
        problems.append(f"model {spec.name!r} on {card}: quantization fp8 needs compute capability "
                        f"{_version(E4M3_CAPABILITY)} or newer, and this card is {_version(capability)}; use int8 "
                        "(the same bytes) or int4")
    return problems, notes
