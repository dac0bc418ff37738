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
apt_install() {
    # A Debian package, installed once when its command is missing; without apt (or root) a warning, and on we go.
    local package="$1" command="$2" skipped="$3"
    command -v "$command" >/dev/null 2>&1 && return 0
    local sudo=""; [[ "$(id -u)" != 0 ]] && sudo="sudo -n"
    echo "installing $package (Debian package)..." >&2
    { $sudo apt-get update -qq >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null; } \
        || echo "warning: could not install $package; $skipped will be skipped" >&2
}
# espeak-ng speaks the real test audio (VAD, ASR plumbing); Chromium runs the playground's browser tests (Playwright
# drives Debian's build: no browser is downloaded).
apt_install espeak-ng espeak-ng "the speech tests"
apt_install chromium chromium "the playground's browser tests"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    exit 0
fi
echo "setting up $VENV (first run takes a minute or two)..." >&2
quiet_pip --upgrade pip setuptools wheel
# torch first, exactly pinned: on a CPU-only machine this takes the CPU build, on CUDA the CUDA build.
quiet_pip "torch==2.13.0"
quiet_pip -e ".[engines,server,test,ray]"   # ray: the optional extra for --ray, which its tests need
echo "$WANT" > "$STAMP"
