#!/usr/bin/env bash
# The Python wheels the GPU check needs on an offline GPU host whose image lacks them (bench/gpu_check/wheels.txt,
# pinned to the lock): downloaded here, where PyPI answers, for CPython 3.12 manylinux x86_64 into .whl/ (git-ignored;
# carry it with the tree). Prints each wheel and the total; fails over 40 MiB, or when a wheel needs a package that
# neither the host's image (bench/gpu_check/host_image.txt) nor the set has. PYTHON_VERSION=3.11 etc. for another host.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m bench.gpu_check.wheels "${1:-.whl}" --python-version "${PYTHON_VERSION:-3.12}"
