#!/usr/bin/env bash
# Creates the venv and installs the project with every extra, at the versions requirements-lock.txt names; safe to
# run again (skips when nothing changed). VENV picks another folder; UNLOCKED=1 takes the newest allowed releases
# instead of the lock (scripts/lock.sh uses it to refresh the lock).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
LOCK=requirements-lock.txt
STAMP="$VENV/.installed"
WANT="$(cat pyproject.toml scripts/setup.sh "$LOCK" <(echo "unlocked=${UNLOCKED:-}") | sha256sum | cut -d' ' -f1)"

quiet_pip() {
    # pip's notes about absent local mirrors and setuptools' deprecation banners are noise here.
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" \
        2> >(grep -v -e "is ignored: it is neither" -e "^  " -e "^$" >&2)
}

apt_install() {
    # A Debian package, installed once when its command is missing. Without apt (or root): a warning here, and the
    # tests that need it skip on a person's machine and fail under CI (tests/needs.py).
    local package="$1" command="$2" needed_by="$3"
    command -v "$command" >/dev/null 2>&1 && return 0
    local sudo=""; [[ "$(id -u)" != 0 ]] && sudo="sudo -n"
    echo "installing $package (Debian package)..." >&2
    { $sudo apt-get update -qq >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null; } \
        || echo "warning: could not install $package: $needed_by will skip (and fail under CI=true)" >&2
}
# espeak-ng speaks the real test audio (VAD, ASR plumbing); Chromium runs the playground's browser tests (Playwright
# drives Debian's build: no browser is downloaded).
apt_install espeak-ng espeak-ng "the speech tests"
apt_install chromium chromium "the playground's browser tests"
# g++ and ninja build the LLM's C++ CPU kernels (llm_kernels/cpu_decode.cpp, ggml_matmul.cpp) through torch's
# extension loader.
apt_install g++ g++ "the C++ CPU kernels (decode then runs layer by layer in Python, GGUF weights repacked)"
apt_install ninja-build ninja "the C++ CPU kernels (decode then runs layer by layer in Python, GGUF weights repacked)"

# Pipecat in a venv of its own (Pipecat 1.14 pins protobuf < 7, Ray needs >= 7), exactly as its lock names, made
# afresh when the lock changes. A failure stops set-up: tests/test_realtime_clients.py needs it.
PIPECAT_VENV=.venv-pipecat
PIPECAT_LOCK=requirements-pipecat-lock.txt
PIPECAT_WANT="$(sha256sum < "$PIPECAT_LOCK" | cut -d' ' -f1)"
if [[ ! -f "$PIPECAT_VENV/.installed" || "$(cat "$PIPECAT_VENV/.installed")" != "$PIPECAT_WANT" ]]; then
    echo "setting up $PIPECAT_VENV (Pipecat, for the realtime client tests)..." >&2
    rm -rf "$PIPECAT_VENV"
    "$PY" -m venv "$PIPECAT_VENV"
    VENV="$PIPECAT_VENV" quiet_pip -r "$PIPECAT_LOCK" \
        || { echo "error: could not install $PIPECAT_LOCK into $PIPECAT_VENV" >&2; exit 1; }
    echo "$PIPECAT_WANT" > "$PIPECAT_VENV/.installed"
fi
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    exit 0
fi
if [[ -x "$VENV/bin/python" ]] && ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "$VENV has no pip (its creation was cut short): making it again" >&2
    rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PY" -m venv "$VENV"
fi
echo "setting up $VENV (first run takes a few minutes)..." >&2
rm -f "$STAMP"
if [[ -n "${UNLOCKED:-}" ]]; then
    constraints=()
    quiet_pip --upgrade pip setuptools wheel
else
    # The lock was resolved on a CPU-only machine, whose torch build needs no CUDA wheels. torch's CUDA build pins
    # its own triton and nvidia-* CUDA wheels exactly, so with a GPU the lock's triton gives way to torch's pin.
    constraints_file="$VENV/constraints.txt"
    if nvidia-smi -L >/dev/null 2>&1; then
        grep -v '^triton==' "$LOCK" > "$constraints_file"
    else
        cp "$LOCK" "$constraints_file"
    fi
    constraints=(-c "$constraints_file")
    quiet_pip "${constraints[@]}" pip setuptools wheel
fi
# torch first, exactly pinned (pyproject.toml and the lock agree): on a CPU-only machine this takes the CPU build,
# on CUDA the CUDA build.
quiet_pip "${constraints[@]}" "torch==2.13.0"
# No build isolation: our editable install is built by the venv's (locked) setuptools, not whatever PyPI serves.
quiet_pip "${constraints[@]}" --no-build-isolation -e ".[engines,server,test,ray]"   # ray: the optional extra for --ray
# The C++ CPU kernels, built with the install into torch's extension cache (about 40 s; a cache cleared since, or a
# changed source, is rebuilt on first use).
"$VENV/bin/python" -c "from llm_kernels.cpu_extension import extension; assert extension() is not None" \
    || echo "warning: the C++ CPU kernels did not build: CPU decode runs layer by layer, GGUF weights repacked" >&2
echo "$WANT" > "$STAMP"
