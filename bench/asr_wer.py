"""Word error rate of the Whisper folders we ship, on real recorded speech, through our /v1/audio/transcriptions
beside faster-whisper called directly on the same files in the same run (they should agree), with the real-time
factor of each.

Speech with transcripts comes from Debian packages, fetched once with `apt-get download` and unpacked with
dpkg-deb (nothing installed): pocketsphinx-testdata's five LibriVox clips (16 kHz) and the Asterisk core
prompts (8 kHz, a woman's voice; CC-BY-SA-3.0), of which the first --prompts with five words or more.
WER is word edits over reference words, lower-cased and without punctuation, no other normalisation.

    .venv/bin/python bench/asr_wer.py [--models whisper-base whisper-tiny-en] [--prompts 40] [--concurrency 1 8]

`--concurrency 1 8` sends the clips N at a time, to our server with cross-request batching (batch_size N) and
without (batch_size 1), in one run: requests per second and WER for each.

`--windows` compares instead the encoder window a live pass uses (fitted to the clip: the next 5 s step above it)
with Whisper's whole 30 s one, greedy, on each clip of at most 29.5 s, through the engine directly: WER, seconds a
clip, and how many texts are the same.
"""
from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from hardware import describe  # noqa: E402
from live_server import live_server  # noqa: E402
from speech import word_errors  # noqa: E402

PACKAGES = ("pocketsphinx-testdata", "asterisk-core-sounds-en-wav", "asterisk-core-sounds-en")
CACHE = Path(os.environ.get("ORCH_SPEECH_DIR", ROOT / ".demo-models" / "speech"))


def fetch_speech(root: Path) -> Path:
    """The Debian packages' files under root/x, fetched and unpacked once."""
    if (root / "x" / "usr").is_dir():
        return root / "x"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(["apt-get", "download", *PACKAGES], cwd=tmp, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"apt-get download failed ({done.stderr.strip()}); run `apt-get update` first")
        for deb in Path(tmp).glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root / "x")], check=True)
    return root / "x"


def corpora(files: Path, prompts: int) -> dict[str, list[tuple[Path, str]]]:
    libri = files / "usr/share/pocketsphinx/test/data/librivox"
    texts = [re.match(r"<s> (.*) </s> \((.*)\)", line) for line in (libri / "transcription").read_text().splitlines()]
    librivox = [(libri / f"{m.group(2)}.wav", m.group(1)) for m in texts if m]
    sounds = files / "usr/share/asterisk/sounds/en_US_f_Allison"
    index = gzip.open(files / "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz", "rt").read()
    asterisk = []
    for line in index.splitlines():
        name, sep, text = line.partition(": ")
        if not sep or line.startswith(";") or "[" in text or len(text.split()) < 5:
            continue
        if (wav := sounds / f"{name}.wav").is_file():
            asterisk.append((wav, text))
        if len(asterisk) == prompts:
            break
    return {"librivox": librivox, "asterisk prompts": asterisk}


def duration(path: Path) -> float:
    import wave

    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


async def through_server(url: str, clips: list[tuple[Path, str]], concurrency: int = 1) -> tuple[list[str], float]:
    """The clips' texts, and the wall time to transcribe them all, `concurrency` requests in flight at once."""
    gate = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, wav: Path) -> str:
        async with gate:
            reply = await client.post(url + "/v1/audio/transcriptions", files={"file": (wav.name, wav.read_bytes())},
                                      data={"model": "whisper-1", "language": "en", "temperature": "0"})
            return reply.json()["text"]

    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        texts = await asyncio.gather(*(one(client, wav) for wav, _ in clips))
        return list(texts), time.perf_counter() - start


def direct(folder: Path, clips: list[tuple[Path, str]], beam_size: int, threads: int) -> tuple[list[str], float]:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=threads)
    texts, busy = [], 0.0
    for wav, _ in clips:
        start = time.perf_counter()
        segments, _ = model.transcribe(str(wav), language="en", beam_size=beam_size, temperature=0)
        texts.append(" ".join(s.text.strip() for s in segments))
        busy += time.perf_counter() - start
    return texts, busy


def compare_windows(models: Path, names: list[str], sets: dict[str, list[tuple[Path, str]]], out: Path) -> None:
    """Greedy transcripts with the whole 30 s window and with a window fitted to each clip, clip by clip."""
    import numpy as np
    from faster_whisper.audio import decode_audio

    from engines.asr import WhisperASR
    from engines.asr.batch import SAMPLE_RATE, fitted_window
    from engines.asr.outputs import TranscribeOptions
    from orchestrator.stack import ASRSpec

    rows = []
    for name in names:
        spec = ASRSpec(name=name, kind="asr", path=str(models / name), compute_type="int8", beam_size=1,
                       language="en", device="cpu")
        engine = WhisperASR.from_spec(spec, "cpu")
        engine.load()
        for corpus, clips in sets.items():
            audios = [(decode_audio(str(wav), sampling_rate=SAMPLE_RATE).astype(np.float32), ref) for wav, ref in clips]
            audios = [(a, ref) for a, ref in audios if len(a) <= 29.5 * SAMPLE_RATE]
            row = {"model": name, "corpus": corpus, "clips": len(audios)}
            texts = {}
            for window in ("whole", "fitted"):
                start, texts[window] = time.perf_counter(), []
                for audio, _ in audios:
                    size = fitted_window(len(audio)) if window == "fitted" else None
                    texts[window].append(engine.transcribe(audio, TranscribeOptions(temperature=0.0,
                                                                                     window_s=size)).text)
                row[f"{window}_s_per_clip"] = (time.perf_counter() - start) / len(audios)
                errors = [word_errors(ref, hyp) for (_, ref), hyp in zip(audios, texts[window])]
                row[f"wer_{window}"] = sum(e for e, _ in errors) / sum(n for _, n in errors)
            row["same_text"] = sum(a == b for a, b in zip(texts["whole"], texts["fitted"]))
            rows.append(row)
        engine.close()
    table = Table(title="Encoder window: Whisper's whole 30 s against one fitted to the clip (greedy, int8, en)")
    for column in ("model", "corpus", "clips", "WER whole", "WER fitted", "same text", "s a clip whole",
                   "s a clip fitted"):
        table.add_column(column, justify="left" if column in ("model", "corpus") else "right")
    for r in rows:
        table.add_row(r["model"], r["corpus"], str(r["clips"]), f"{r['wer_whole']:.3f}", f"{r['wer_fitted']:.3f}",
                      f"{r['same_text']}/{r['clips']}", f"{r['whole_s_per_clip']:.3f}", f"{r['fitted_s_per_clip']:.3f}")
    Console(width=160).print(table)
    out.write_text(json.dumps({"hardware": describe(), "rows": rows}, indent=2))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["whisper-base", "whisper-tiny-en"])
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--windows", action="store_true", help="the fitted encoder window against the whole one")
    args = parser.parse_args()
    args.out = args.out or ROOT / f"bench/results/asr_{'windows' if args.windows else 'wer'}.json"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from engines.asr import AsyncASR, WhisperASR
    from orchestrator.demo.real_models import assemble
    from orchestrator.server.app import build_app
    from orchestrator.server.companions import Companions
    from orchestrator.stack import ASRSpec

    models = assemble(Path(os.environ.get("ORCH_REAL_MODELS", ROOT / ".demo-models" / "real")), tuple(args.models))
    sets = corpora(fetch_speech(CACHE), args.prompts)
    if args.windows:
        return compare_windows(models, args.models, sets, args.out)
    threads = os.cpu_count() or 1
    rows, batched_rows = [], []
    for name in args.models:
        spec = ASRSpec(name=name, kind="asr", path=str(models / name), compute_type="int8", beam_size=args.beam_size,
                       language="en", device="cpu", batch_size=max(args.concurrency))
        engine = WhisperASR.from_spec(spec, "cpu")
        engine.load()
        fronts = {"batched": AsyncASR(engine), "one at a time": AsyncASR(engine)}
        fronts["one at a time"].max_batch = 1
        for corpus, clips in sets.items():
            audio_s = sum(duration(w) for w, _ in clips)
            for concurrency in args.concurrency:
                for mode, front in fronts.items():
                    if concurrency == 1 and mode == "one at a time":
                        continue  # the same as batched: nothing waits to share a batch
                    with live_server(build_app(None, None, Companions(asr={name: front}))) as url:
                        texts, seconds = asyncio.run(through_server(url, clips, concurrency))
                    errors = [word_errors(ref, hyp) for (_, ref), hyp in zip(clips, texts)]
                    words = sum(n for _, n in errors)
                    batched_rows.append({"model": name, "corpus": corpus, "concurrency": concurrency, "mode": mode,
                                         "requests_per_s": len(clips) / seconds,
                                         "wer": sum(e for e, _ in errors) / words})
                    if concurrency == 1:
                        ours, ours_s = texts, seconds
            theirs, theirs_s = direct(models / name, clips, args.beam_size, threads)
            e_ours = [word_errors(ref, hyp) for (_, ref), hyp in zip(clips, ours)]
            e_theirs = [word_errors(ref, hyp) for (_, ref), hyp in zip(clips, theirs)]
            words = sum(n for _, n in e_ours)
            rows.append({"model": name, "corpus": corpus, "clips": len(clips), "words": words,
                         "audio_s": audio_s, "wer_ours": sum(e for e, _ in e_ours) / words,
                         "wer_direct": sum(e for e, _ in e_theirs) / words, "rtf_ours": ours_s / audio_s,
                         "rtf_direct": theirs_s / audio_s,
                         "same_text": sum(a.strip() == b.strip() for a, b in zip(ours, theirs))})
        for front in fronts.values():
            front.shutdown()
        engine.close()
    table = Table(title=f"Whisper WER on real speech: our /v1/audio/transcriptions beside faster-whisper directly "
                        f"(int8, beam {args.beam_size}, temperature 0, language en)")
    for column in ("model", "corpus", "clips", "words", "WER ours", "WER direct", "same text", "RTF ours",
                   "RTF direct"):
        table.add_column(column, justify="left" if column in ("model", "corpus") else "right")
    for r in rows:
        table.add_row(r["model"], r["corpus"], str(r["clips"]), str(r["words"]), f"{r['wer_ours']:.3f}",
                      f"{r['wer_direct']:.3f}", f"{r['same_text']}/{r['clips']}", f"{r['rtf_ours']:.3f}",
                      f"{r['rtf_direct']:.3f}")
    Console(width=160).print(table)
    batching = Table(title="Concurrent requests: batched across requests against one at a time")
    for column in ("model", "corpus", "at once", "mode", "requests/s", "WER"):
        batching.add_column(column)
    for r in batched_rows:
        batching.add_row(r["model"], r["corpus"], str(r["concurrency"]), r["mode"], f"{r['requests_per_s']:.2f}",
                         f"{r['wer']:.3f}")
    Console(width=160).print(batching)
    args.out.write_text(json.dumps({"hardware": describe(), "beam_size": args.beam_size, "rows": rows,
                                    "concurrency": batched_rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
