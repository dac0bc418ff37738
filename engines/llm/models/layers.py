"""Building blocks shared by the decoder models: RMSNorm, rotary embedding (incl. llama3 scaling), gated MLP."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised in float32, cast back, then scaled: Hugging Face's order, so 16-bit runs round alike."""
        return self.weight * F.rms_norm(x.float(), self.weight.shape, eps=self.eps).to(x.dtype)


def inverse_frequencies(head_dim: int, params: dict) -> torch.Tensor:
    base, kind = params["rope_theta"], params["rope_type"]
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / params["factor"]
    if kind == "llama3":
        return _llama3_scaled(inv_freq, params)
    raise ValueError(f"rope type {kind!r} is not supported (supported: default, linear, llama3)")


def _llama3_scaled(inv_freq: torch.Tensor, p: dict) -> torch.Tensor:
    """Llama 3.1's rule: long wavelengths slowed by `factor`, short ones kept, a smooth blend between."""
    factor, low, high = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
    old_len = p["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, blended, scaled)


class RotaryEmbedding(nn.Module):
    """Neox-style rotation (halves, not interleaved pairs) from a cos/sin table built once, looked up once a step."""

    def __init__(self, head_dim: int, max_position: int, params: dict) -> None:
        super().__init__()
        self.head_dim, self.max_position, self.params = head_dim, max_position, params
        self.register_buffer("cos_sin", torch.empty(0), persistent=False)

    def build(self, device: torch.device, max_position: int = 0) -> None:
        """The table for every position up to the larger of the config's and `max_position` (the served length)."""
        self.max_position = max(self.max_position, max_position)
        inv_freq = inverse_frequencies(self.head_dim, self.params).to(device)
        freqs = torch.outer(torch.arange(self.max_position, device=device, dtype=torch.float32), inv_freq)
        sin = freqs.sin()
        self.cos_sin = torch.stack((freqs.cos().repeat(1, 2), torch.cat((-sin, sin), dim=-1)))  # sin signed

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, signed sin) for the step's positions, [tokens, 1, head_dim] each, shared by every layer."""
        cos, sin = self.cos_sin.index_select(1, positions).to(dtype).unsqueeze(2)
        return cos, sin


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x·cos + rotate_half(x)·sin, with rotate_half's minus sign folded into the table's sin."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin)


class GatedMLP(nn.Module):
    """SwiGLU with gate and up projections stacked in one matmul."""

    def __init__(self, hidden: int, intermediate: int, bias: bool) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(hidden, 2 * intermediate, bias=bias)
        self.down_proj = nn.Linear(intermediate, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)
