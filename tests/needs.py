"""What set-up installs (Debian's espeak-ng and chromium, optional extras): missing on a person's machine the
tests that need it skip; under CI (`CI` set) a missing piece fails them, so a broken set-up never passes green."""
from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType

import pytest


def missing(what: str) -> None:
    """Skip, or under CI fail, a test whose set-up could not be installed."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{what}; scripts/setup.sh must install it (CI is set, so this is a failure, not a skip)",
                    pytrace=False)
    pytest.skip(what, allow_module_level=True)


def needs_command(command: str, install: str) -> str:
    """The path of `command`, or a skip (a failure under CI) saying how to install it."""
    path = shutil.which(command)
    if path is None:
        missing(f"{command} is not installed ({install})")
    return path


def needs_module(name: str, install: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        missing(f"{name} cannot be imported ({error}; {install})")
