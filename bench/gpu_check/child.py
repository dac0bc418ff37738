"""One step in a process of its own (`python -m bench.gpu_check.child STEP ...`): a crash or a hung GPU call in one
step cannot take the others with it, and each step starts with the card empty."""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import time
import traceback
from pathlib import Path

from bench.gpu_check.common import SIMULATE_ENV, Context, Skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--out", type=Path, required=True, help="where this step's outcome (JSON) goes")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    try:
        if os.environ.get(SIMULATE_ENV) == args.step:
            raise RuntimeError(f"simulated failure ({SIMULATE_ENV}={args.step})")
        module = importlib.import_module(f"bench.gpu_check.step_{args.step}")
        outcome = module.run(Context(args.smoke, args.work, args.device, args.step))
        record = {"data": outcome.data, "summary": outcome.summary, "failures": outcome.failures, "error": None}
    except Skipped as why:
        print(f"skipped: {why}")
        record = {"data": {}, "summary": "", "failures": [], "error": f"skipped: {why}", "skipped": True}
    except (Exception, SystemExit) as exc:  # noqa: BLE001  (reported in the table; the next step still runs)
        traceback.print_exc()
        record = {"data": {}, "summary": "", "failures": [], "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()[-4000:]}
    record["seconds"] = round(time.perf_counter() - start, 1)
    args.out.write_text(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    main()
