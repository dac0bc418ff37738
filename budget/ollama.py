"""`ollama:NAME[:TAG]`: a model the user already pulled with Ollama, found in Ollama's own store (no Ollama process).

The store holds manifests (`manifests/HOST/NAMESPACE/MODEL/TAG`, JSON) whose model layer names a blob by digest
(`blobs/sha256-HEX`): that blob is the GGUF file. Where the store is: OLLAMA_MODELS, else ~/.ollama/models, else
/usr/share/ollama/.ollama/models (the Linux service's).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from budget.estimate import PlanInputError

PREFIX = "ollama:"
MODEL_LAYER = "application/vnd.ollama.image.model"
DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG = "registry.ollama.ai", "library", "latest"


def ollama_stores() -> list[Path]:
    if os.environ.get("OLLAMA_MODELS"):
        return [Path(os.environ["OLLAMA_MODELS"]).expanduser()]
    return [Path("~/.ollama/models").expanduser(), Path("/usr/share/ollama/.ollama/models")]


def manifest_path(store: Path, name: str) -> Path:
    """`qwen3:8b` -> manifests/registry.ollama.ai/library/qwen3/8b; `user/model`, `host/user/model` likewise."""
    model, _, tag = name.partition(":")
    parts = model.split("/")
    if len(parts) == 1:
        parts = [DEFAULT_HOST, DEFAULT_NAMESPACE, *parts]
    elif len(parts) == 2:
        parts = [DEFAULT_HOST, *parts]
    return store.joinpath("manifests", *parts, tag or DEFAULT_TAG)


def resolve_ollama(path: str) -> Path:
    """The GGUF blob of `ollama:NAME[:TAG]`; a name not in the store is an error that lists what is there."""
    name = path.removeprefix(PREFIX).strip()
    if not name:
        raise PlanInputError(f"path {path!r} names no model; write it as ollama:NAME[:TAG], e.g. ollama:qwen3:8b")
    for store in ollama_stores():
        manifest = manifest_path(store, name)
        if not manifest.is_file():
            continue
        try:
            layers = json.loads(manifest.read_text())["layers"]
            digest = next(layer["digest"] for layer in layers if layer.get("mediaType") == MODEL_LAYER)
        except (OSError, ValueError, KeyError, TypeError, StopIteration):
            raise PlanInputError(f"{manifest} is not an Ollama manifest with a model layer; `ollama pull {name}` "
                                 "again") from None
        blob = store / "blobs" / digest.replace(":", "-")
        if not blob.is_file():
            raise PlanInputError(f"Ollama's manifest for {name} names {blob.name}, which is not in {blob.parent}; "
                                 f"`ollama pull {name}` again")
        return blob
    stores = " or ".join(str(s) for s in ollama_stores())
    pulled = sorted({m for store in ollama_stores() for m in pulled_models(store)})
    listing = f"pulled there: {', '.join(pulled)}" if pulled else "no model is pulled there"
    raise PlanInputError(f"Ollama model {name!r} is not in {stores} ({listing}); `ollama pull {name}` first, or set "
                         "OLLAMA_MODELS to the store that holds it")


def pulled_models(store: Path) -> list[str]:
    """Every NAME:TAG in a store, as `ollama list` spells them (the default host and namespace left out)."""
    root = store / "manifests"
    if not root.is_dir():
        return []
    names = []
    for manifest in root.glob("*/*/*/*"):
        host, namespace, model, tag = manifest.relative_to(root).parts
        prefix = "" if (host, namespace) == (DEFAULT_HOST, DEFAULT_NAMESPACE) else (
            f"{namespace}/" if host == DEFAULT_HOST else f"{host}/{namespace}/")
        names.append(f"{prefix}{model}:{tag}")
    return names
