"""Where a model's files are: its own directory, the local Hugging Face cache, or a shipped model config."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from budget.estimate import PlanInputError
from budget.gguf import gguf_file, is_gguf
from budget.ollama import PREFIX as OLLAMA, resolve_ollama

MODEL_CONFIGS_DIR = Path(os.environ.get("ORCH_MODEL_CONFIGS_DIR", Path(__file__).resolve().parents[1] / "configs" / "models"))
_PREFIXES = ("faster-whisper-", "faster-", "hf-", "models--")
_SUFFIXES = ("-ct2", "-ctranslate2", "-hf", "-safetensors")
MODEL_FILE_SUFFIXES = (".gguf", ".onnx")  # models that are one file


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """The directory to read, whether it holds real weights or only a config, and the one model file a path may name
    (a .gguf LLM, a Piper .onnx voice)."""

    directory: Path
    config_only: bool
    file: Path | None = None

    @property
    def gguf(self) -> Path | None:
        return self.file if self.file is not None and is_gguf(self.file) else None

    def describe(self) -> str:
        if self.file is not None:
            return str(self.file)
        return f"config {self.directory.name} (configs/models)" if self.config_only else str(self.directory)

    def json(self, name: str) -> dict[str, Any] | None:
        file = self.directory / name
        if not file.is_file():
            return None
        try:
            return json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            raise PlanInputError(f"{file} is not valid JSON ({exc}); fix or replace the file") from None


def piper_voice_files(path: Path) -> tuple[Path, Path] | None:
    """(voice.onnx, voice.onnx.json) that a path names, or None when it holds no .onnx; errors say what is missing."""
    if path.is_file():
        onnx = path if path.suffix == ".onnx" else path.with_suffix("") if path.name.endswith(".onnx.json") else None
    else:
        found = sorted(path.glob("*.onnx")) if path.is_dir() else []
        if len(found) > 1:
            raise PlanInputError(f"{path} holds {len(found)} Piper voices ({', '.join(f.name for f in found)}); "
                                 "point path at the .onnx file of the one to serve")
        onnx = found[0] if found else None
    if onnx is None:
        return None
    config = onnx.with_name(onnx.name + ".json")
    if not config.is_file():
        raise PlanInputError(f"the Piper voice {onnx} has no {config.name} beside it; download the voice's "
                             ".onnx.json (it holds the phoneme map and the sample rate) into the same folder")
    return onnx, config


def known_configs() -> list[str]:
    return sorted(p.name for p in MODEL_CONFIGS_DIR.iterdir() if (p / "config.json").is_file()) if MODEL_CONFIGS_DIR.is_dir() else []


def _hf_cache_snapshot(repo_id: str) -> Path | None:
    """The newest snapshot of `org/name` in the local Hugging Face cache, without importing huggingface_hub."""
    root = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub")
    snapshots = root.expanduser() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return None
    found = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def config_candidates(text: str) -> list[str]:
    """Card names a path or repo id may stand for: `/m/faster-whisper-large-v3-turbo` → whisper-large-v3-turbo."""
    base = text.rstrip("/").split("/")[-1].lower()
    names = [base]
    for prefix in _PREFIXES:
        if base.startswith(prefix):
            names.append(base[len(prefix):])
    for name in list(names):
        for suffix in _SUFFIXES:
            if name.endswith(suffix):
                names.append(name[: -len(suffix)])
    return names


def find_model_files(name: str, path: str | None, config: str | None, required: bool = True) -> ModelFiles | None:
    """Real files when `path` exists (or is cached), else the named or guessed config; else a clear error."""
    if path and path.startswith(OLLAMA):
        blob = resolve_ollama(path)
        return ModelFiles(blob.parent, False, blob)
    if path:
        local = Path(path).expanduser()
        if local.is_dir():
            return ModelFiles(local, False, gguf_file(local) if not (local / "config.json").is_file() else None)
        if local.is_file() and local.suffix in MODEL_FILE_SUFFIXES:
            return ModelFiles(local.parent, False, local)
        if local.exists():
            raise PlanInputError(f"model {name!r}: path {path} is a file; point it at the model's directory "
                                 "(or at a .gguf LLM or a Piper .onnx voice)")
        if "/" in path and not path.startswith(("/", ".", "~")) and (snap := _hf_cache_snapshot(path)):
            return ModelFiles(snap, False)
    wanted = [config.lower()] if config else config_candidates(path or name)
    for candidate in wanted:
        if (MODEL_CONFIGS_DIR / candidate / "config.json").is_file():
            return ModelFiles(MODEL_CONFIGS_DIR / candidate, True)
    if not required:
        return None
    where = f"path {path} does not exist on this machine" if path else "it has no path"
    if config:
        raise PlanInputError(f"model {name!r}: config {config!r} is not in {MODEL_CONFIGS_DIR}; known configs: "
                             f"{', '.join(known_configs())}")
    raise PlanInputError(f"model {name!r}: {where}, and no shipped model config matches it. Point path at the model's "
                         f"directory, or set `config:` to one of {', '.join(known_configs())} to plan without weights.")
