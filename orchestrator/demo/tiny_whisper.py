"""A tiny random-weight multilingual Whisper, converted to CTranslate2 for faster-whisper, made offline."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    PreTrainedTokenizerFast,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
)

LANGUAGES = ("en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr "
             "bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn "
             "yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su").split()
TEXT_TOKENS = 50257  # multilingual Whisper's text vocabulary
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", *(f"<|{code}|>" for code in LANGUAGES), "<|translate|>",
            "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
TIMESTAMPS = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
CORPUS = ["Hello there, how are you today?", "The quick brown fox jumps over the lazy dog.",
          "Speech recognition turns a voice into text.", "Bonjour, comment allez-vous ?"] * 10


def make_tokenizer() -> Tokenizer:
    """Byte-level BPE with exactly TEXT_TOKENS text ids (trained, then padded), then Whisper's specials."""
    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    trained.train_from_iterator(CORPUS, trainer)
    state = json.loads(trained.to_str())["model"]
    vocab: dict[str, int] = dict(state["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    letters = "abcdefghijklmnopqrstuvwxyz"
    pieces = ("Ġ" + "".join(p) for n in itertools.count(3) for p in itertools.product(letters, repeat=n))
    while len(vocab) < TEXT_TOKENS - 1:  # filler text pieces: never produced by encoding, decodable like any other
        vocab.setdefault(next(pieces), len(vocab))
    vocab[""] = TEXT_TOKENS - 1  # as in the real multilingual vocabulary; CTranslate2 reads it as "multilingual"
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS + TIMESTAMPS])
    return tok


def make_whisper(folder: Path, seed: int = 0, dims: dict | None = None) -> Path:
    """Write the Hugging Face model to folder/hf and its CTranslate2 conversion to folder/ct2; return the latter.

    `dims` overrides the tiny config (e.g. large-v3-turbo's sizes, for benchmarks on a GPU).
    """
    from ctranslate2.converters import TransformersConverter

    hf, ct2 = folder / "hf", folder / "ct2"
    hf.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer()
    ids = {t: tok.token_to_id(t) for t in SPECIALS}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                            pad_token="<|endoftext|>").save_pretrained(hf)
    sizes = {"vocab_size": tok.get_vocab_size(), "num_mel_bins": 80, "d_model": 64, "encoder_layers": 2,
             "encoder_attention_heads": 2, "decoder_layers": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 128,
             "decoder_ffn_dim": 128, **(dims or {})}
    config = WhisperConfig(**sizes, max_source_positions=1500, max_target_positions=448, pad_token_id=eot,
                           bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot,
                           begin_suppress_tokens=[eot], suppress_tokens=[])
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    gen = model.generation_config
    gen.decoder_start_token_id, gen.eos_token_id, gen.pad_token_id = sot, eot, eot
    gen.no_timestamps_token_id = ids["<|notimestamps|>"]
    gen.alignment_heads = [[1, 0], [1, 1]]
    gen.suppress_tokens, gen.begin_suppress_tokens = [], [eot]
    model.save_pretrained(hf)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(hf)
    TransformersConverter(str(hf), copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(
        str(ct2), quantization="float16", force=True)
    # transformers 5 drops generation_config.lang_to_id on load, so the converter finds no languages:
    # write them where CTranslate2 reads them (it calls a model multilingual when it has language ids)
    ct2_config = json.loads((ct2 / "config.json").read_text())
    ct2_config["lang_ids"] = sorted(ids[f"<|{code}|>"] for code in LANGUAGES)
    (ct2 / "config.json").write_text(json.dumps(ct2_config))
    return ct2
