"""Kokoro-82M's files: which ONNX model and voices file a stack entry names, and whether they really are Kokoro's.

A Kokoro TTS is two files: the ONNX model (kokoro-onnx's `kokoro-v1.0.onnx`, `.int8.onnx` or `.fp16.onnx`;
onnx-community's `model.onnx`) and a voices file (an `.npz` of named tables, or kokoro-onnx's `voices-v1.0.bin`,
which is one too): each voice a 510×1×256 float32 table, one 256-wide style vector per phoneme count. Both are
checked here from their headers alone (no onnxruntime, no weights read), so `orchestrator plan` and `run`
refuse a wrong file with its name before anything loads.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from budget.estimate import PlanInputError
from budget.onnx_header import OnnxHeader, read_onnx_header

STYLE_DIM = 256          # the model's `style` input: [1, 256]
CONTEXT_TOKENS = 510     # phonemes one call can take (512 positions with the two pads); a voice table's rows
# Phonemes the backend gives the model at once (Kokoro-FastAPI's largest chunk); fewer below speed 1, so no call's
# audio outgrows this many phonemes at speed 1, and the decoder's peak is what the planner counts for it.
CHUNK_TOKENS = 250
VOICES_SUFFIXES = (".npz", ".bin")
KOKORO_INPUTS = "tokens (int64, 1 × N), style (float32, 1 × 256) and speed (float32, 1)"


@dataclass(frozen=True, slots=True)
class KokoroFiles:
    model: Path
    voices: Path


def _voices_beside(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in VOICES_SUFFIXES
                  and (p.suffix == ".npz" or p.name.startswith("voices")))


def kokoro_files(path: Path, voices: str | None = None) -> KokoroFiles:
    """The model and voices file a `path` (the .onnx, or a folder holding one) and optional `voices:` name."""
    path = path.expanduser()
    if path.is_file():
        if path.suffix != ".onnx":
            raise PlanInputError(f"{path} is not a Kokoro model (not an .onnx file); point path at kokoro-v1.0.onnx "
                                 "(or its .int8 / .fp16 export), or at the folder holding it and its voices file")
        model = path
    elif path.is_dir():
        found = sorted(path.glob("*.onnx"))
        if len(found) != 1:
            what = f"holds {len(found)} .onnx files ({', '.join(f.name for f in found)})" if found else \
                "holds no .onnx file"
            raise PlanInputError(f"{path} {what}; point path at the Kokoro model's .onnx file")
        model = found[0]
    else:
        raise PlanInputError(f"the Kokoro model path {path} does not exist on this machine; fetch kokoro-v1.0.onnx "
                             "and voices-v1.0.bin (kokoro-onnx's release) and point path at them")
    if voices is not None:
        table = Path(voices).expanduser()
        if not table.is_absolute() and not table.exists():
            table = model.parent / table
        if not table.is_file():
            raise PlanInputError(f"the Kokoro voices file {voices} does not exist (looked beside {model} too); "
                                 "name a .npz of voice tables or kokoro-onnx's voices-v1.0.bin")
        return KokoroFiles(model, table)
    found = _voices_beside(model.parent)
    if len(found) != 1:
        what = f"{len(found)} voices files ({', '.join(f.name for f in found)})" if found else "no voices file"
        raise PlanInputError(f"the Kokoro model {model} has {what} beside it; put one there (a .npz of voice tables, "
                             "or kokoro-onnx's voices-v1.0.bin) or name it with `voices:`")
    return KokoroFiles(model, found[0])


def looks_like_kokoro(path: str | None, voices: str | None) -> bool:
    """For `backend: auto`: a voices file named, or an .onnx with a voices file (and no Piper .onnx.json) beside it."""
    if voices is not None:
        return True
    if not path:
        return False
    local = Path(path).expanduser()
    models = [local] if local.suffix == ".onnx" and local.is_file() else \
        sorted(local.glob("*.onnx")) if local.is_dir() else []
    return len(models) == 1 and not models[0].with_name(models[0].name + ".json").exists() \
        and bool(_voices_beside(models[0].parent))


def check_kokoro_model(model: Path) -> OnnxHeader:
    """The model's header, or a PlanInputError naming the file when its inputs are not Kokoro's."""
    header = read_onnx_header(model)
    tokens, style, speed = header.input("tokens", "input_ids"), header.input("style"), header.input("speed")
    ok = (tokens is not None and tokens.elem_type == "int64" and len(tokens.shape) == 2
          and style is not None and style.elem_type == "float32" and style.shape[-1:] in ((STYLE_DIM,), (None,))
          and speed is not None and speed.elem_type == "float32")
    if not ok:
        have = ", ".join(str(i) for i in header.inputs) or "none"
        piper = " It has a .onnx.json beside it: it looks like a Piper voice (backend: piper)." \
            if model.with_name(model.name + ".json").exists() else ""
        raise PlanInputError(f"{model} is not a Kokoro model: its inputs are {have}, where Kokoro-82M's are "
                             f"{KOKORO_INPUTS}.{piper} Point path at a Kokoro-82M ONNX export (kokoro-onnx's "
                             "kokoro-v1.0.onnx, .int8.onnx or .fp16.onnx, or onnx-community's model.onnx).")
    return header


def voice_shapes(voices: Path) -> dict[str, tuple[int, ...]]:
    """Each voice's table shape, read from the archive's headers; a PlanInputError naming the file if any is not a
    Kokoro style table (rows × [1 ×] 256 floats, every voice alike)."""
    import numpy as np

    shapes: dict[str, tuple[int, ...]] = {}
    fix = ("a Kokoro voices file is an .npz (kokoro-onnx's voices-v1.0.bin is one) of 510×1×256 float32 tables, one "
           "256-wide style vector per phoneme count; fetch it again, or point voices: at the right file")
    try:
        with zipfile.ZipFile(voices) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                       else np.lib.format.read_array_header_2_0(f))
                name = member[: -len(".npy")]
                if not np.issubdtype(dtype, np.floating) or len(shape) not in (2, 3) or shape[-1] != STYLE_DIM \
                        or (len(shape) == 3 and shape[1] != 1) or shape[0] < 1:
                    raise PlanInputError(f"{voices} is not a Kokoro voices file: voice {name!r} is a "
                                         f"{'×'.join(map(str, shape)) or 'scalar'} {dtype} table; {fix}")
                shapes[name] = shape
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        if isinstance(error, PlanInputError):
            raise
        raise PlanInputError(f"{voices} is not a Kokoro voices file ({error}); {fix}") from None
    if not shapes:
        raise PlanInputError(f"{voices} is not a Kokoro voices file: it holds no voice tables; {fix}")
    rows = {s[0] for s in shapes.values()}
    if len(rows) > 1:
        raise PlanInputError(f"{voices} is not a Kokoro voices file: its tables have {sorted(rows)} rows, where "
                             f"every voice has the same; {fix}")
    return shapes
