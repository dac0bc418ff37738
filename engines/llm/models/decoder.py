"""Qwen3, Qwen2/2.5 and Llama 3.x as one decoder: they differ only in q/k norms, qkv bias and rope scaling."""
from __future__ import annotations

import torch
from torch import nn

from budget.architectures import LLM_ARCHITECTURES, LLMArchitecture, llm_head_dim, llm_kv_heads
from engines.llm.context import get_context
from budget.rope import rope_parameters
from engines.llm.models.layers import GatedMLP, RMSNorm, RotaryEmbedding, apply_rotary
from llm_kernels.dispatch import paged_attention, store_kv


class Attention(nn.Module):
    def __init__(self, cfg: dict, arch: LLMArchitecture) -> None:
        super().__init__()
        self.num_heads, self.head_dim = cfg["num_attention_heads"], llm_head_dim(cfg)
        self.num_kv_heads = llm_kv_heads(cfg)
        self.q_size, self.kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.scale = self.head_dim ** -0.5
        bias = arch.qkv_bias or bool(cfg.get("attention_bias", False))
        self.qkv_proj = nn.Linear(cfg["hidden_size"], self.q_size + 2 * self.kv_size, bias=bias)
        self.o_proj = nn.Linear(self.q_size, cfg["hidden_size"], bias=bool(cfg.get("attention_bias", False)))
        self.q_norm = RMSNorm(self.head_dim, cfg["rms_norm_eps"]) if arch.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, cfg["rms_norm_eps"]) if arch.qk_norm else None
        self.k_cache = self.v_cache = torch.empty(0)  # views into the pool, set by the ModelRunner

    def forward(self, rope: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv_proj(x)
        heads = self.num_heads + self.num_kv_heads
        qk = qkv[:, : heads * self.head_dim].view(-1, heads, self.head_dim)   # q and k rotate as one tensor
        v = qkv[:, heads * self.head_dim:].view(-1, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            qk = torch.cat((self.q_norm(qk[:, : self.num_heads]), self.k_norm(qk[:, self.num_heads:])), dim=1)
        q, k = apply_rotary(qk, *rope).split([self.num_heads, self.num_kv_heads], dim=1)
        ctx = get_context()
        store_kv(k, v, self.k_cache, self.v_cache, ctx.slot_mapping, ctx.reference_plan)
        o = paged_attention(q, self.k_cache, self.v_cache, ctx.cu_seqlens_q, ctx.seq_lens, ctx.block_tables,
                            self.scale, ctx.max_seqlen_q, ctx.reference_plan)
        return self.o_proj(o.flatten(1))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: dict, arch: LLMArchitecture) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.self_attn = Attention(cfg, arch)
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.mlp = GatedMLP(cfg["hidden_size"], cfg["intermediate_size"], bool(cfg.get("mlp_bias", False)))

    def forward(self, rope: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(rope, self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class DecoderModel(nn.Module):
    def __init__(self, cfg: dict, arch: LLMArchitecture) -> None:
        super().__init__()
        self.rotary = RotaryEmbedding(llm_head_dim(cfg), cfg.get("max_position_embeddings", 32768),
                                      rope_parameters(cfg))
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList(DecoderLayer(cfg, arch) for _ in range(cfg["num_hidden_layers"]))
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        rope = self.rotary(positions, x.dtype)
        for layer in self.layers:
            x = layer(rope, x)
        return self.norm(x)


class CausalLM(nn.Module):
    """The decoder plus its LM head; logits are computed only for the rows the caller asks for."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        self.config = cfg
        self.model = DecoderModel(cfg, LLM_ARCHITECTURES[cfg["model_type"]])
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        if cfg.get("tie_word_embeddings", False):
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, positions)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()

    def weight_bytes(self) -> int:
        """Bytes of the weights held (a tensor shared by two modules once; not the rotary table, built from config)."""
        tensors = {id(t): t for name, t in [*self.named_parameters(), *self.named_buffers()] if "rotary" not in name}
        return sum(t.numel() * t.element_size() for t in tensors.values())
