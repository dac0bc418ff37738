"""`python -m bench.gpu_check.wheels DEST`: download exactly the wheels of wheels.txt for the GPU host (cp312
manylinux x86_64 by default), check that every one's requirements are met by the host's image or the set itself,
and that the set stays under the size bound. Standard library and pip only: it runs before anything is installed."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIMIT_MIB = 40.0   # the tree and the wheels travel in 64 MiB together; the repository takes ~2 of them
# pip matches manylinux_2_N exactly: every N a wheel of the set may be tagged with (llguidance: 2_31)
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(17, 40)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_list(path: Path) -> dict[str, str | None]:
    """name -> pinned version (None where the line names no version), comments and '+' marks dropped."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip().lstrip("+")
        if line:
            name, _, version = line.partition("==")
            out[canonical(name)] = version or None
    return out


def download(dest: Path, python_version: str) -> list[Path]:
    """pip download of the pinned set, no dependencies (the check below names what is missing); stale wheels go."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted = read_list(HERE / "wheels.txt")
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                           "--only-binary=:all:", "--implementation", "cp", "--python-version", python_version,
                           *platforms, "-d", str(dest), *(f"{n}=={v}" for n, v in wanted.items())],
                          stderr=subprocess.PIPE, text=True)
    # pip's notes about this machine's absent local mirrors are noise
    print("".join(line for line in proc.stderr.splitlines(True) if "is ignored: it is neither" not in line),
          end="", file=sys.stderr)
    proc.check_returncode()
    kept = []
    for wheel in sorted(dest.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        if wanted.get(canonical(name)) == version:
            kept.append(wheel)
        else:
            wheel.unlink()   # another version or a package no longer carried: two versions stop the install there
    return kept


def requirements(wheel: Path, python_version: str) -> list[str]:
    """The names a wheel requires on Linux x86_64 under this Python, extras left out."""
    from pip._vendor.packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    env = {"python_version": python_version, "python_full_version": f"{python_version}.0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
    names = []
    for line in lines:
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.partition(":")[2].strip())
            if req.marker is None or req.marker.evaluate(env):
                names.append(canonical(req.name))
    return names


def check(wheels: list[Path], python_version: str) -> list[str]:
    """What is wrong with the set: a wheel missing, or a requirement neither the image nor the set meets."""
    wanted = read_list(HERE / "wheels.txt")
    have = {canonical(w.name.split("-")[0]) for w in wheels}
    image = set(read_list(HERE / "host_image.txt"))
    problems = [f"{name}: no wheel downloaded" for name in wanted if name not in have]
    for wheel in wheels:
        for need in requirements(wheel, python_version):
            if need not in have and need not in image:
                problems.append(f"{wheel.name} requires {need}, which neither the host's image nor wheels.txt has")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="folder for the wheels (.whl/ travels with the tree)")
    parser.add_argument("--python-version", default="3.12", help="the host's Python (default 3.12)")
    args = parser.parse_args()
    wheels = download(args.dest, args.python_version)
    problems = check(wheels, args.python_version)
    total = sum(w.stat().st_size for w in wheels)
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2**20:7.2f} MiB  {wheel.name}")
    print(f"{total / 2**20:7.2f} MiB in {len(wheels)} wheels in {args.dest} (limit {LIMIT_MIB:g} MiB)")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if total > LIMIT_MIB * 2**20:
        print(f"error: the wheels take {total / 2**20:.1f} MiB, over the {LIMIT_MIB:g} MiB bound", file=sys.stderr)
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
