"""One prepared GPU check: every GPU-only measurement in one time-boxed run (`scripts/gpu-check.sh`).

The bench scripts and test helpers it reuses import their neighbours by name, so their folders go on the path.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for _folder in (ROOT / "tests", ROOT / "bench", ROOT):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
