"""A tiny random-weight VITS (MMS-TTS shaped) with a hand-written character vocab, made offline (tests, demo)."""
from __future__ import annotations

import json
from pathlib import Path

# MMS-TTS style vocab: pad at 0 (the blank between characters), lower-case letters, space, apostrophe, digits
CHARACTERS = list("abcdefghijklmnopqrstuvwxyz '-0123456789")


def make_vits(path: Path, num_speakers: int = 1, seed: int = 0) -> Path:
    """Write config, weights and tokenizer of a VITS small enough to synthesise in milliseconds on CPU."""
    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    path.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, **{c: i + 1 for i, c in enumerate(CHARACTERS)}, "<unk>": len(CHARACTERS) + 1}
    (path / "vocab.json").write_text(json.dumps(vocab))
    config = VitsConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32,
        flow_size=16, spectrogram_bins=17, upsample_initial_channel=16, upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        duration_predictor_filter_channels=16, duration_predictor_num_flows=2, prior_encoder_num_flows=2,
        prior_encoder_num_wavenet_layers=1, posterior_encoder_num_wavenet_layers=1,
        num_speakers=num_speakers, speaker_embedding_size=8 if num_speakers > 1 else 0,
        sampling_rate=16_000, pad_token_id=0)
    torch.manual_seed(seed)
    VitsModel(config).save_pretrained(path)
    VitsTokenizer(str(path / "vocab.json"), phonemize=False, normalize=True, add_blank=True).save_pretrained(path)
    return path
