#!/usr/bin/env bash
# Creates .venv and installs the project with every extra; safe to run again (skips when nothing changed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.installed"
WANT="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"

quiet_pip() {
    # pip's notes about absent local mirrors and setuptools' deprecation banners are noise here.
    "$VENV/bin/python" -m pip install -q "$@" 2> >(grep -v -e "is ignored: it is neither" -e "^  " -e "^$" >&2)
}

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PY" -m venv "$VENV"
fi
# espeak-ng speaks the real test audio (VAD, ASR plumbing); a Debian package, installed once.
if ! command -v espeak-ng >/dev/null 2>&1; then
    SUDO=""; [[ "$(id -u)" != 0 ]] && SUDO="sudo -n"
    echo "installing espeak-ng (Debian package)..." >&2
    $SUDO apt-get update -qq >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null \
        || echo "warning: could not install espeak-ng; the speech tests will be skipped" >&2
fi
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    exit 0
fi
echo "setting up $VENV (first run takes a minute or two)..." >&2
quiet_pip --upgrade pip setuptools wheel
# torch first, exactly pinned: on a CPU-only machine this takes the CPU build, on CUDA the CUDA build.
quiet_pip "torch==2.13.0"
quiet_pip -e ".[engines,server,test]"
echo "$WANT" > "$STAMP"
