"""The tokenizer of a checkpoint: a folder's own files, or one built from a GGUF's metadata and cached.

transformers builds a GGUF's tokenizer (vocabulary, merges, chat template) in 10-25 s; the result is
saved once under the cache folder, keyed by the file's path, size and time, so later starts (and the
server, which renders chat templates itself) load it in well under a second.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from budget.gguf import gguf_file

log = logging.getLogger(__name__)


def cache_root() -> Path:
    return Path(os.environ.get("ORCH_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
                / "voice-orchestrator")


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    path = Path(path)
    gguf = gguf_file(path)
    if gguf is None:
        return AutoTokenizer.from_pretrained(path)
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = cache_root() / "gguf-tokenizers" / f"{gguf.stem}-{key}"
    if (cached / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(cached)
    log.info("building the tokenizer of %s from its metadata (once; cached in %s)", gguf.name, cached)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    partial = cached.with_name(cached.name + f".partial-{os.getpid()}")
    try:
        tokenizer.save_pretrained(partial)
        partial.rename(cached)
    except OSError as error:  # a read-only or racing cache only costs the next start the same wait
        log.warning("could not cache the tokenizer in %s: %s", cached, error)
        shutil.rmtree(partial, ignore_errors=True)
    return tokenizer
