"""Several GPUs in one stack: each card planned on its own and reported per card, bad placements refused (exit 2),
and each worker (or launched server) given only its card. Offline and CPU-only: cards are presets."""
import json
import re
import struct

import pytest

from budget.devices import nvml_index, worker_env
from budget.gpus import PRESETS
from budget.report import to_json
from budget.target import plan_stack_cards
from orchestrator.cli import main
from orchestrator.stack_file import parse_stack

TWO_CARDS = """\
gpus:
  - {device: 0, preset: rtx-4090}
  - {device: 1, preset: rtx-4080, reserve: 512MiB}
models:
  - {name: llm, kind: llm, card: LLM, max_model_len: 32768, kv_cache_dtype: fp8, dtype: bfloat16}
  - {name: whisper, kind: asr, card: whisper-large-v3-turbo, compute_type: float16, device: 1}
  - {name: voice, kind: tts, card: mms-tts-eng, device: 1}
  - {name: minilm, kind: embedding, card: all-MiniLM-L6-v2, device: 1}
  - {name: vad, kind: vad}
"""
FITS = TWO_CARDS.replace("card: LLM", "card: qwen3-8b")
# A 14B model on the 16 GB card: card 0 still fits, card 1 is refused.
REFUSED = FITS.replace("card: qwen3-8b", "card: qwen3-14b, device: 1")
ONE_CARD = "gpu: {memory: 40GiB}\nmodels:\n" + FITS.split("models:\n")[1].replace(", device: 1", "")


@pytest.fixture
def plan_cli(tmp_path, capsys, monkeypatch):
    """`orchestrator plan` in this process (exit code, stdout, stderr) on a stack written from text."""
    monkeypatch.setenv("COLUMNS", "200")

    def run(text: str, *args: str) -> tuple[int, str, str]:
        stack = tmp_path / "stack.yaml"
        stack.write_text(text)
        code = main(["plan", str(stack), *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def _plan(text: str):
    stack = parse_stack(text)
    return stack, plan_stack_cards(stack)


def test_each_card_is_planned_on_its_own():
    stack, plan = _plan(FITS)
    card0, card1 = plan.cards
    assert (card0.total_bytes, card1.total_bytes) == (PRESETS["rtx-4090"].total_bytes, PRESETS["rtx-4080"].total_bytes)
    assert (card0.reserve_bytes, card1.reserve_bytes) == (1 << 30, 512 << 20)
    assert [m.estimate.name for m in card1.models] == ["whisper", "voice", "minilm"]
    assert [m.estimate.name for m in card0.models] == ["llm", "vad"]  # off every card: listed with the first
    llm = card0.models[0]
    assert llm.share_bytes == card0.total_bytes - card0.reserve_bytes  # rest is what card 0 has left, not card 1
    assert card0.llm == "llm" and card0.kv_tokens > 32768 and card1.llm is None
    assert [m.estimate.name for m in plan.models] == [m.name for m in stack.models] and plan.fits


def test_plan_prints_a_table_per_card(plan_cli):
    code, out, _ = plan_cli(FITS)
    assert code == 0
    assert "Memory plan, card 0 (rtx-4090)" in out and "Memory plan, card 1 (rtx-4080)" in out
    assert out.index("whisper") > out.index("card 1 (rtx-4080)") and "stack verdict  FITS" in out


def test_the_card_that_does_not_fit_is_refused_by_name(plan_cli):
    code, out, _ = plan_cli(REFUSED)
    assert code == 1
    assert "✗ card 1 (rtx-4080): llm needs" in " ".join(out.split())
    assert "DOES NOT FIT: card 1 (rtx-4080) refused" in out and re.search(r"verdict +FITS", out)  # card 0 fits


def test_json_has_every_card_and_keeps_the_one_card_fields(plan_cli):
    code, out, _ = plan_cli(REFUSED, "--json")
    plan = json.loads(out)
    assert code == 1 and plan["fits"] is False
    assert [(c["index"], c["card"], c["fits"]) for c in plan["cards"]] == [
        (0, "card 0 (rtx-4090)", True), (1, "card 1 (rtx-4080)", False)]
    assert plan["total_bytes"] == plan["cards"][0]["total_bytes"]  # the top level is the first card, as before
    assert plan["problems"] and all(p.startswith("card 1 (rtx-4080): ") for p in plan["problems"])
    names = [m["name"] for c in plan["cards"] for m in c["models"]]
    assert sorted(names) == sorted(["llm", "whisper", "voice", "minilm", "vad"])  # each model on one card
    llm = next(m for m in plan["cards"][1]["models"] if m["name"] == "llm")
    assert llm["device"] == "cuda:1" and llm["on_card"] is True


def test_one_card_json_is_unchanged_with_its_card_listed():
    _, plan = _plan(ONE_CARD)
    card, data = to_json(plan.cards[0]), to_json(plan)
    assert {k: data[k] for k in card} == card  # every field a one-card plan had, with the same values
    assert len(data["cards"]) == 1 and {k: data["cards"][0][k] for k in card} == card
    assert data["cards"][0]["card"] == "card 0 (40.00 GiB)" and plan.cards[0].problems == card["problems"]


def test_markdown_and_png_cover_both_cards(plan_cli, tmp_path):
    code, out, _ = plan_cli(REFUSED, "--markdown")
    assert code == 1 and "### card 0 (rtx-4090)" in out and "### card 1 (rtx-4080)" in out
    assert out.count("| model | kind |") == 2 and "**stack verdict**: DOES NOT FIT" in out
    two, one = tmp_path / "two.png", tmp_path / "one.png"
    assert plan_cli(REFUSED, "--png", str(two))[0] == 1
    assert plan_cli(ONE_CARD, "--png", str(one))[0] == 0
    height = lambda png: struct.unpack(">II", png.read_bytes()[16:24])[1]  # IHDR: width, height
    assert two.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and height(two) > 1.5 * height(one)  # a bar per card


BAD = {
    "gpu and gpus": ("gpu: {device: 0}\n" + FITS, "keep one: move the gpu entry into the gpus list"),
    "unknown device": (FITS.replace("card: all-MiniLM-L6-v2, device: 1", "card: all-MiniLM-L6-v2, device: 3"),
                       "model 'minilm' names device 3, which this stack does not have (its devices: 0, 1); set its "
                       "device to one of them, or add {device: 3} to gpus"),
    "unknown device, one card": ("gpu: {memory: 24GiB}\nmodels:\n"
                                 "  - {name: m, kind: tts, card: mms-tts-eng, device: 1}\n",
                                 "leave its device out, or list every card under gpus:"),
    "two rests on one card": (FITS + "  - {name: big, kind: llm, card: qwen3-4b, device: 1}\n"
                              "  - {name: other, kind: llm, card: qwen3-0.6b, device: 1}\n",
                              "only one model can take memory: rest on card 1, but big and other both do"),
    "card listed twice": (FITS.replace("device: 1, preset", "device: 0, preset"), "card 0 is listed twice"),
    "unknown preset": (FITS.replace("rtx-4080", "rtx-9080"), "unknown GPU preset 'rtx-9080'; known presets"),
    "url on a card": (FITS + "  - {name: far, kind: llm, url: 'http://127.0.0.1:9/v1', device: 1}\n",
                      "has a url, so it runs on no card of ours; drop its device"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_placements_exit_2_with_the_fix(plan_cli, case):
    text, expected = BAD[case]
    code, out, err = plan_cli(text)
    assert code == 2 and out == ""
    assert expected in " ".join(err.split()), err


def test_gpu_flags_are_for_a_one_card_stack(plan_cli):
    code, _, err = plan_cli(FITS, "--gpu", "h100-80")
    assert code == 2 and "give each card its own preset:" in " ".join(err.split())


def test_one_rest_per_card_is_fine():
    _, plan = _plan(FITS + "  - {name: second, kind: llm, card: qwen3-0.6b, device: 1, max_model_len: 4096}\n")
    assert plan.fits and [c.llm for c in plan.cards] == ["llm", "second"]


def test_a_worker_sees_only_its_card():
    assert worker_env("cuda:1", {}) == ({"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, "cuda:0")
    assert worker_env("cuda:1", {"CUDA_VISIBLE_DEVICES": "4,5"})[0]["CUDA_VISIBLE_DEVICES"] == "5"  # a shared box
    assert worker_env("cuda:0", {"CUDA_DEVICE_ORDER": "FASTEST_FIRST"})[0]["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"
    assert worker_env("cpu", {}) == ({}, "cpu")
    with pytest.raises(ValueError, match="shows 1 card"):
        worker_env("cuda:1", {"CUDA_VISIBLE_DEVICES": "3"})
    assert (nvml_index(1, {"CUDA_VISIBLE_DEVICES": "4,5"}), nvml_index(1, {}), nvml_index(0, {"CUDA_VISIBLE_DEVICES":
                                                                                            "GPU-abc"})) == (5, 1, 0)


def test_the_supervisor_spawns_each_worker_on_its_card():
    from orchestrator.supervisor import Supervisor

    stack, plan = _plan(FITS)
    supervisor = Supervisor(stack, plan)
    by_name = {m.estimate.name: m for m in plan.models}
    whisper = supervisor.worker_spec(by_name["whisper"], 0)
    assert whisper.env["CUDA_VISIBLE_DEVICES"] == "1" and whisper.device == "cuda:0"
    assert whisper.share_bytes == by_name["whisper"].share_bytes  # capped at its share of its own card
    llm = supervisor.worker_spec(by_name["llm"], 1 << 30)
    assert (llm.env["CUDA_VISIBLE_DEVICES"], llm.kv_bytes) == ("0", 1 << 30)
    assert supervisor.worker_spec(by_name["vad"], 0).env == {}


def test_a_launched_vllm_on_card_1_gets_its_share_of_card_1(plan_cli):
    text = REFUSED.replace("card: qwen3-14b", "card: qwen3-4b, path: Qwen/Qwen3-4B, engine: vllm")
    code, out, _ = plan_cli(text)
    assert code == 0 and "CUDA_VISIBLE_DEVICES=1 vllm serve Qwen/Qwen3-4B" in out
    plan = json.loads(plan_cli(text, "--json")[1])
    argv, llm = plan["launch"]["llm"], next(m for m in plan["cards"][1]["models"] if m["name"] == "llm")
    utilization = float(argv[argv.index("--gpu-memory-utilization") + 1])
    assert 0 <= llm["share_bytes"] / PRESETS["rtx-4080"].total_bytes - utilization < 1e-4


def test_a_url_llm_is_off_every_card():
    _, plan = _plan(FITS.replace("card: qwen3-8b,", "url: 'http://127.0.0.1:9/v1',"))
    far = next(m for m in plan.models if m.estimate.name == "llm")
    assert (far.device, far.on_card, far.share_bytes) == ("remote", False, 0)
    assert all(far not in [m for m in c.models if m.on_card] for c in plan.cards) and plan.cards[0].llm is None


def test_a_stack_planned_smaller_than_its_card_sizes_the_kv_pool_to_the_plan(monkeypatch):
    """24 GiB planned on a 141 GiB card: the LLM's KV pool is what its share leaves, not the card's free memory;
    and when another model holds more than its share, the pool gives way."""
    from budget import probe
    from budget.units import GiB
    from orchestrator.supervisor import Supervisor

    stack, plan = _plan(ONE_CARD.replace("gpu: {memory: 40GiB}", "gpu: {memory: 24GiB}"))
    h200 = probe.GpuInfo(0, "NVIDIA H200", 141 * GiB, 140 * GiB, 1 * GiB)
    monkeypatch.setattr(probe, "probe_gpus", lambda: probe.ProbeResult([h200]))
    supervisor = Supervisor(stack, plan)
    llm = next(m for m in plan.models if m.estimate.name == "llm")
    kv = supervisor._llm_kv_bytes(llm)
    assert 0 < kv <= llm.share_bytes - llm.estimate.need_bytes
    supervisor.status["whisper"].actual_bytes = supervisor.status["whisper"].planned_bytes + 2 * GiB
    assert supervisor._llm_kv_bytes(llm) <= kv - 2 * GiB + 1
