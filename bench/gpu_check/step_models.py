"""The models every later step serves: random weights at real size on a GPU, tiny on the smoke run; made once.

Real size: Qwen3-8B's config (configs/models/qwen3-8b) in bf16 made on the card, an MMS-TTS-sized VITS, a
MiniLM-L6-shaped sentence-transformers embedder (all-MiniLM-L6-v2's dims, random weights: the real one is an 87 MB
package nobody carries), and Whisper large-v3-turbo's dims in CTranslate2 float16 where CTranslate2 and PyAV are
here (an offline GPU host's image has neither, and they are too large to carry: the ASR is left out of the stack
there, and the row says so). The real Piper voice is measured where the demo's models and piper-tts are on this
machine. The smoke run makes the same kinds by the same code with tiny dims. Each model is written beside its final
folder and renamed when complete, so a second run reuses it and an interrupted one redoes only what was
unfinished. The stack the later steps start is written here too, with only the kinds this machine can run.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from bench.gpu_check import ROOT
from bench.gpu_check.common import Context, Outcome, unavailable

LLM_CARD = ROOT / "configs/models/qwen3-8b/config.json"
SMOKE_LLM = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, vocab_size=32000, max_position_embeddings=2048)
MINILM = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
              max_position_embeddings=512)   # sentence-transformers/all-MiniLM-L6-v2
STACKS = {True: ROOT / "configs/demo-tiny.yaml", False: ROOT / "configs/vtuber-24gb.yaml"}
CARD_MEMORY = "24GiB"  # gpu.memory of the derived stack: planned and capped as on a 24 GB card (= --gpu-memory 24GiB)


def folders(ctx: Context) -> dict[str, Path]:
    """Where each kind's model lives (made by this step): the ASR only where it can run, Piper only where the demo's
    real voice and piper-tts are here."""
    root = ctx.work / "models"
    found = {"llm": root / "qwen3", "tts": root / "vits", "embedding": root / "minilm"}
    if unavailable("asr") is None:
        found["asr"] = root / "whisper" / "ct2"
    piper = Path(os.environ.get("ORCH_REAL_MODELS", ROOT / ".demo-models/real")) / "piper-joe"
    if unavailable("piper") is None and any(piper.glob("*.onnx")):
        found["piper"] = piper
    return found


def stack_path(ctx: Context) -> Path:
    return ctx.work / "stack.yaml"


def run(ctx: Context) -> Outcome:
    root = ctx.work / "models"
    made = {}
    for name, make in makers(ctx).items():
        made[name] = once(root / name, make)
    paths = folders(ctx)
    write_stack(ctx, paths)
    sizes = {kind: _bytes(path) for kind, path in paths.items()}
    data = {"made_s": made, "paths": {k: str(v) for k, v in paths.items()}, "bytes_on_disk": sizes,
            "stack": str(stack_path(ctx)), "base_stack": str(STACKS[ctx.smoke].relative_to(ROOT)),
            "llm_config": llm_config(ctx.smoke)}
    left_out = {kind: why for kind, why in (("asr", unavailable("asr")), ("vad", unavailable("vad")),
                                            ("piper", unavailable("piper"))) if why}
    if "piper" not in paths and "piper" not in left_out:
        left_out["piper"] = "no Piper voice here (the demo's real models, ORCH_REAL_MODELS/piper-joe, are not fetched)"
    data["left_out"] = left_out
    fresh = ", ".join(n for n, s in made.items() if s is not None) or "none (kept from a previous run)"
    summary = (f"{len(paths)} models ({', '.join(paths)}); made now: {fresh}; "
               f"stack {stack_path(ctx).name} from {STACKS[ctx.smoke].name}"
               + (f"; left out: {', '.join(left_out)}" if left_out else ""))
    return Outcome(data, summary)


def makers(ctx: Context) -> dict[str, Callable[[Path], None]]:
    from orchestrator.demo.tiny_vits import make_vits

    made = {"qwen3": lambda p: make_llm(p, ctx),
            "vits": (lambda p: make_vits(p, num_speakers=4)) if ctx.smoke else mms_vits,
            "minilm": make_minilm}
    if "asr" in folders(ctx):
        from orchestrator.demo.tiny_whisper import make_whisper

        if ctx.smoke:
            made["whisper"] = lambda p: make_whisper(p)
        else:
            from companions import turbo_whisper
            made["whisper"] = turbo_whisper
    return made


def mms_vits(folder: Path) -> None:
    """The tiny VITS's vocab and tokenizer under VitsConfig's defaults, which are MMS-TTS's sizes."""
    from transformers import VitsConfig, VitsModel

    from orchestrator.demo.tiny_vits import make_vits

    make_vits(folder)
    vocab = json.loads((folder / "vocab.json").read_text())
    VitsModel(VitsConfig(vocab_size=len(vocab), pad_token_id=0)).save_pretrained(folder)


def make_minilm(folder: Path) -> None:
    """A sentence-transformers folder with all-MiniLM-L6-v2's dims, pooling and normalisation, random weights, and a
    WordPiece vocabulary of its size (letters, then filler words)."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    bert = folder / "bert"
    bert.mkdir()
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *(f"##{c}" for c in letters), *".,?!'"]
    fillers = ("".join(p) for n in itertools.count(2) for p in itertools.product(letters, repeat=n))
    while len(words) < MINILM["vocab_size"]:
        words.append(next(fillers))
    (bert / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(bert / "vocab.txt")).save_pretrained(bert)
    BertModel(BertConfig(**MINILM)).save_pretrained(bert)
    embedder = SentenceTransformer(modules=[models.Transformer(str(bert), max_seq_length=256),
                                            models.Pooling(MINILM["hidden_size"], "mean"), models.Normalize()])
    embedder.save(str(folder))
    shutil.rmtree(bert)


def once(final: Path, make: Callable[[Path], None]) -> float | None:
    """Make into a partial folder and rename it into place; seconds taken, or None if it was already there."""
    if final.exists():
        return None
    start = time.perf_counter()
    partial = final.with_name(f".{final.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    make(partial)
    partial.rename(final)
    return round(time.perf_counter() - start, 1)


def llm_config(smoke: bool) -> dict:
    """Qwen3-8B's own config, or the same with tiny dims for the smoke run."""
    config = json.loads(LLM_CARD.read_text())
    return {**config, **SMOKE_LLM} if smoke else config


def make_llm(folder: Path, ctx: Context) -> None:
    """Random weights made on the device (bf16 at real size) with the tests' byte-level tokenizer beside them, its
    vocabulary filled to the model's so that every sampled id decodes to a word (the voice steps speak them)."""
    import torch
    from llm_throughput import random_checkpoint
    from orchestrator.demo.tiny_llm import make_tokenizer

    dtype = torch.float32 if ctx.smoke else torch.bfloat16
    model = random_checkpoint(folder, llm_config(ctx.smoke), dtype, ctx.device)
    del model
    make_tokenizer(folder)
    fill_vocabulary(folder / "tokenizer.json", llm_config(ctx.smoke)["vocab_size"])


def fill_vocabulary(path: Path, size: int) -> None:
    """Pad a BPE vocabulary with filler words up to `size` ids: never produced by encoding, decodable like any other
    (tiny_whisper.py's recipe)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    data = json.loads(path.read_text())
    vocab: dict[str, int] = data["model"]["vocab"]
    pieces = ("Ġ" + "".join(p) for n in itertools.count(3) for p in itertools.product(letters, repeat=n))
    while len(vocab) < size:
        vocab.setdefault(next(pieces), len(vocab))
    path.write_text(json.dumps(data, ensure_ascii=False))


def write_stack(ctx: Context, paths: dict[str, Path]) -> Path:
    """The base stack with every path pointed at the models made here (and, on a GPU, planned for a 24 GB card);
    a kind this machine cannot run (the ASR or the VAD on an offline host's image) is left out, and with it the
    voice pipeline that needs it."""
    from orchestrator.stack_file import load_stack

    data = yaml.safe_load(STACKS[ctx.smoke].read_text())
    runs = set(paths) | ({"vad"} if unavailable("vad") is None else set())
    data["models"] = [m for m in data["models"] if m["kind"] in runs]
    if not {"asr", "vad"} <= runs:
        data.pop("voice", None)
    for model in data["models"]:
        if model["kind"] in paths:
            model["path"] = str(paths[model["kind"]])
            model.pop("card", None)
    if ctx.smoke:   # resident sets: a CUDA build of torch (the host's, in the rehearsal) maps ~0.3 GiB more each
        data["gpu"]["tolerance"] = max(data["gpu"].get("tolerance", 0), 1.0)
    else:
        data["gpu"]["memory"] = CARD_MEMORY
        for model in data["models"]:   # the LLM and the embedder on the card; Whisper and the TTS on the CPU
            if model["kind"] in ("asr", "tts"):
                model["device"] = "cpu"
    out = stack_path(ctx)
    header = f"# made by bench/gpu_check from {STACKS[ctx.smoke].relative_to(ROOT)}\n"
    out.write_text(header + yaml.safe_dump(data, sort_keys=False))
    load_stack(out)  # valid, or this step fails here rather than every later one
    return out


def _bytes(path: Path) -> int:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files)
