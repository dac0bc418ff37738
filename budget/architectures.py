"""The architecture facts the planner and the engines share, and parameter counts from a config.json alone.

One table, one formula each: the LLM engine builds its decoder and sizes its KV pool from these same
functions, so the plan and the runtime cannot disagree about what a model is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Config = dict[str, Any]


@dataclass(frozen=True, slots=True)
class LLMArchitecture:
    qk_norm: bool       # Qwen3: RMSNorm over each head's q and k before rope
    qkv_bias: bool      # Qwen2: biases on q, k, v (else read from config's attention_bias)


LLM_ARCHITECTURES: dict[str, LLMArchitecture] = {
    "qwen3": LLMArchitecture(qk_norm=True, qkv_bias=False),
    "qwen2": LLMArchitecture(qk_norm=False, qkv_bias=True),
    "llama": LLMArchitecture(qk_norm=False, qkv_bias=False),
}
LLM_TYPES = tuple(LLM_ARCHITECTURES)


def llm_head_dim(cfg: Config) -> int:
    """`head_dim` when the config has it (Qwen3 sets 128 independently of hidden size), else hidden / heads."""
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def llm_kv_heads(cfg: Config) -> int:
    return cfg.get("num_key_value_heads") or cfg["num_attention_heads"]


def kv_bytes_per_token(cfg: Config, dtype_bytes: float) -> int:
    """2 (K and V) x layers x kv heads x head_dim x bytes: what one token of context holds in the KV pool."""
    return int(2 * cfg["num_hidden_layers"] * llm_kv_heads(cfg) * llm_head_dim(cfg) * dtype_bytes)


def llm_parameters(cfg: Config) -> tuple[int, int]:
    """(total, embedding) parameters of a Qwen3 / Qwen2 / Llama decoder; a tied lm_head counts once."""
    h, inter, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    heads, kv_heads = cfg["num_attention_heads"], llm_kv_heads(cfg)
    d = llm_head_dim(cfg)
    q, kv = heads * d, kv_heads * d
    model_type = cfg.get("model_type")
    arch = LLM_ARCHITECTURES.get(model_type, LLM_ARCHITECTURES["llama"])
    qkv_bias = arch.qkv_bias or cfg.get("attention_bias", False)
    attn = h * q + 2 * h * kv + q * h
    if qkv_bias:
        attn += q + 2 * kv
    if cfg.get("attention_bias", False):
        attn += h
    if arch.qk_norm:
        attn += 2 * d  # q_norm and k_norm over head_dim
    mlp = 3 * h * inter + (2 * inter + h if cfg.get("mlp_bias", False) else 0)
    layer = attn + mlp + 2 * h
    embedding = vocab * h * (1 if cfg.get("tie_word_embeddings", False) else 2)
    return cfg["num_hidden_layers"] * layer + h + embedding, embedding


def whisper_parameters(cfg: Config) -> int:
    """Encoder-decoder Whisper as transformers lays it out (conv stem, learned positions, tied proj_out)."""
    d, mels = cfg["d_model"], cfg["num_mel_bins"]
    attn = 4 * d * d + 3 * d  # q, v, out have biases; k has none

    def layer(ffn: int, cross: bool) -> int:
        return attn * (2 if cross else 1) + 2 * d * (3 if cross else 2) + 2 * d * ffn + ffn + d

    encoder = (mels * d * 3 + d) + (d * d * 3 + d) + cfg["max_source_positions"] * d
    encoder += cfg["encoder_layers"] * layer(cfg["encoder_ffn_dim"], False) + 2 * d
    decoder = cfg["vocab_size"] * d + cfg["max_target_positions"] * d
    decoder += cfg["decoder_layers"] * layer(cfg["decoder_ffn_dim"], True) + 2 * d
    return encoder + decoder


def bert_parameters(cfg: Config) -> int:
    """BERT-family encoder with pooler, as sentence-transformers checkpoints store it."""
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    embeddings = (cfg["vocab_size"] + cfg["max_position_embeddings"] + cfg.get("type_vocab_size", 2)) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h + (h * inter + inter) + (inter * h + h) + 2 * h
    return embeddings + cfg["num_hidden_layers"] * layer + (h * h + h)


def _wavenet(h: int, kernel: int, layers: int, cond: int) -> int:
    """WaveNet stack with weight norm (g and v) on every conv; the last res/skip conv is half width."""
    total = layers * (2 * h + 2 * h * h * kernel + 2 * h)
    total += (layers - 1) * (2 * h + 2 * h * h + 2 * h) + (h + h * h + h)
    if cond:
        total += 2 * h * layers * (1 + cond + 1)
    return total


def _dds(h: int, kernel: int, layers: int) -> int:
    return layers * ((h * kernel + h) + (h * h + h) + 4 * h)


def vits_parameters(cfg: Config) -> int:
    """VITS / MMS-TTS as transformers' VitsModel lays it out (posterior encoder included, as checkpoints are)."""
    h, f, vocab = cfg["hidden_size"], cfg["flow_size"], cfg["vocab_size"]
    spk = cfg.get("speaker_embedding_size", 0) if cfg.get("num_speakers", 1) > 1 else 0
    head_dim, window = h // cfg["num_attention_heads"], cfg["window_size"]
    ffn, fk = cfg["ffn_dim"], cfg["ffn_kernel_size"]
    layer = 4 * (h * h + h) + 2 * (2 * window + 1) * head_dim + 4 * h + (ffn * h * fk + ffn) + (h * ffn * fk + h)
    text = vocab * h + cfg["num_hidden_layers"] * layer + (2 * f * h + 2 * f)

    wk = cfg["wavenet_kernel_size"]
    half = f // 2
    coupling = (h * half + h) + _wavenet(h, wk, cfg["prior_encoder_num_wavenet_layers"], spk) + (half * h + half)
    flow = cfg["prior_encoder_num_flows"] * coupling
    posterior = (h * cfg["spectrogram_bins"] + h) + _wavenet(h, wk, cfg["posterior_encoder_num_wavenet_layers"], spk)
    posterior += 2 * f * h + 2 * f

    channels = cfg["upsample_initial_channel"]
    decoder = channels * f * 7 + channels + (spk * channels + channels if spk else 0)
    for i, kernel in enumerate(cfg["upsample_kernel_sizes"]):
        out = cfg["upsample_initial_channel"] // 2 ** (i + 1)
        decoder += channels * out * kernel + out
        for rk, dilations in zip(cfg["resblock_kernel_sizes"], cfg["resblock_dilation_sizes"]):
            decoder += 2 * len(dilations) * (out * out * rk + out)
        channels = out
    decoder += channels * 7

    dk, dl = cfg["duration_predictor_kernel_size"], cfg["depth_separable_num_layers"]
    bins, nflows = cfg["duration_predictor_flow_bins"], cfg["duration_predictor_num_flows"]
    conv_flow = (h + h) + _dds(h, dk, dl) + (h * (3 * bins - 1) + (3 * bins - 1))
    flows = 4 + nflows * conv_flow
    duration = 2 * (h * h + h) + _dds(h, dk, dl) + flows
    duration += (h + h) + (h * h + h) + _dds(h, dk, dl) + flows
    if spk:
        duration += spk * h + h
    speakers = cfg.get("num_speakers", 1) * spk if spk else 0
    return text + flow + posterior + decoder + duration + speakers
