"""The offline GPU host, rehearsed on this machine: a cached virtual environment like its image, and gpu-check.sh run
in it the way the host runs it (the carried wheels installed with --no-index --no-deps --target, nothing else).

`python -m bench.gpu_check.rehearsal [--build-only] [gpu-check arguments]`, e.g. `... --cpu-smoke --out DIR`.

The environment: Python 3.12, the host's (pyenv's 3.12 on these machines; GPU_CHECK_REHEARSAL_PYTHON names
another), with host_image.txt's packages at its versions (torch 2.11.0 is PyPI's CUDA 13.0 build, the host's own;
here it runs on the CPU) and their dependencies, less every distribution host_image.txt does not name: a package the
host lacks is missing here too, so an import of one fails here first. The wheels are scripts/gpu-wheels.sh's own set
for cp312, the very files the host gets. Built once per set of pins (the first build downloads about 3 GB, a few
minutes), under ~/.cache/voice-orchestrator/gpu-host/<hash of the pins> (GPU_CHECK_REHEARSAL_CACHE moves it).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.gpu_check import ROOT
from bench.gpu_check.wheels import HERE, canonical, read_list
from bench.gpu_check.wheels import requirements as wheel_requirements

CACHE = Path(os.environ.get("GPU_CHECK_REHEARSAL_CACHE", Path.home() / ".cache/voice-orchestrator/gpu-host"))
HOST_PYTHON = "3.12"
RECIPE = 2   # raise when build() changes what it makes: every cached environment is then rebuilt


def find_python() -> str:
    """A Python 3.12 interpreter, as the host's python3 is."""
    named = os.environ.get("GPU_CHECK_REHEARSAL_PYTHON")
    pyenv = sorted(glob.glob(str(Path.home() / f".pyenv/versions/{HOST_PYTHON}.*/bin/python3")), reverse=True)
    found = [named] if named else [shutil.which(f"python{HOST_PYTHON}"), *pyenv]
    for python in filter(None, found):
        version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True)
        if version.returncode == 0 and version.stdout.strip() == HOST_PYTHON:
            return python
    raise RuntimeError(f"no Python {HOST_PYTHON} here (looked for {named or 'python3.12 and ~/.pyenv/versions/3.12.*'})"
                       ": the rehearsal runs the host's cp312 wheels under the host's Python; set "
                       "GPU_CHECK_REHEARSAL_PYTHON")


def requirements(wheels: list[Path] = ()) -> tuple[list[str], list[str]]:
    """What to install: host_image.txt's pinned and '+' lines, and the image's packages the carried wheels need
    (installed there with --no-deps, they rely on the image for those); constraints from the lock for the unpinned."""
    lock = {canonical(line.partition("==")[0]): line.strip() for line in (ROOT / "requirements-lock.txt").read_text()
            .splitlines() if "==" in line and not line.startswith("#")}
    carried = set(read_list(HERE / "wheels.txt"))
    needed = {n for w in wheels for n in wheel_requirements(w, HOST_PYTHON)} - carried
    wanted, unpinned = [], sorted(needed)
    for line in (HERE / "host_image.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            wanted.append(line)
        elif line.startswith("+"):
            unpinned.append(canonical(line[1:]))
    pinned = {canonical(w.partition("==")[0]) for w in wanted}
    unpinned = [n for n in dict.fromkeys(unpinned) if n not in pinned]
    return wanted + unpinned, [lock[n] for n in unpinned if n in lock]


def key(python: str) -> str:
    """The environment's identity: the pins, the carried set, the interpreter and the recipe."""
    version = subprocess.run([python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True).stdout
    parts = [json.dumps(requirements()), (HERE / "wheels.txt").read_text(), version, str(RECIPE)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def build() -> tuple[Path, Path]:
    """The cached environment's python and wheel folder, built first if this set of pins has none yet."""
    python = find_python()
    root = CACHE / key(python)
    if (root / "ready.json").is_file():
        return root / "venv/bin/python", root / "wheels"
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    print(f"rehearsal: building the GPU host's environment in {root} (the first build downloads ~3 GB)",
          file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "bench.gpu_check.wheels", str(partial / "wheels"), "--python-version",
                    HOST_PYTHON], check=True, cwd=ROOT)
    subprocess.run([python, "-m", "venv", str(partial / "venv")], check=True)
    venv = partial / "venv/bin/python"
    wanted, constraints = requirements(sorted((partial / "wheels").glob("*.whl")))
    (partial / "constraints.txt").write_text("\n".join(constraints) + "\n")
    pip = [str(venv), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "-q", "-c", str(partial / "constraints.txt"), *wanted], check=True)
    removed = prune(pip)
    installed = json.loads(subprocess.run([*pip, "list", "--format=json"], check=True, capture_output=True,
                                          text=True).stdout)
    (partial / "ready.json").write_text(json.dumps({"python": python, "installed": installed, "removed": removed},
                                                   indent=1))
    # a venv moves whole when it is run as venv/bin/python (only its console scripts name the old path)
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    for old in (p for p in CACHE.iterdir() if p != root):  # other pins' environments: ~6 GB each
        shutil.rmtree(old, ignore_errors=True)
    return root / "venv/bin/python", root / "wheels"


def prune(pip: list[str]) -> list[str]:
    """Uninstall every distribution the host's image does not name (pulled in by a newer dependency than the
    image's, e.g. typer's pydantic): the rehearsal may hold less than the host, never more."""
    image = set(read_list(HERE / "host_image.txt"))
    listed = json.loads(subprocess.run([*pip, "list", "--format=json"], check=True, capture_output=True,
                                       text=True).stdout)
    extra = sorted(d["name"] for d in listed if canonical(d["name"]) not in image)
    if extra:
        print(f"rehearsal: removing what the host's image lacks: {', '.join(extra)}", file=sys.stderr)
        subprocess.run([*pip, "uninstall", "-q", "-y", *extra], check=True)
    return extra


def environ(python: Path, wheels: Path) -> dict[str, str]:
    """gpu-check.sh's environment for a rehearsal run: this interpreter, these wheels, nothing of this machine's."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "TRITON_INTERPRET")}
    return {**env, "PYTHON": str(python), "GPU_CHECK_WHEELS": str(wheels), "PYTHONNOUSERSITE": "1"}


def main() -> int:
    argv = sys.argv[1:]
    python, wheels = build()
    if argv[:1] == ["--build-only"]:
        print(python)
        return 0
    return subprocess.run(["bash", str(ROOT / "scripts/gpu-check.sh"), *argv], env=environ(python, wheels)).returncode


if __name__ == "__main__":
    sys.exit(main())
