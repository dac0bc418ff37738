"""`orchestrator plan` as a user runs it: exit codes, the table, JSON, Markdown, the picture, and bad input."""
import json

import pytest

STACK = "configs/vtuber-24gb.yaml"


def test_plan_fits_on_a_4090_without_a_gpu(run_cli):
    result = run_cli("plan", STACK, "--gpu", "rtx-4090")
    assert result.returncode == 0, result.stderr
    for text in ("qwen3-8b", "whisper", "voice", "minilm", "vad", "KV cache", "concurrency", "headroom", "FITS"):
        assert text in result.stdout


def test_plan_refuses_on_a_4080_and_names_the_fix(run_cli):
    result = run_cli("plan", STACK, "--gpu", "rtx-4080")
    assert result.returncode == 1
    assert "DOES NOT FIT" in result.stdout and "smaller or quantized model" in result.stdout


def test_json_fields(run_cli):
    result = run_cli("plan", STACK, "--gpu", "rtx-4090", "--json")
    assert result.returncode == 0
    plan = json.loads(result.stdout)
    for key in ("kv_tokens", "max_concurrent_sequences", "fits", "headroom_bytes"):
        assert key in plan
    assert plan["fits"] is True and plan["max_concurrent_sequences"] >= 1
    for model in plan["models"]:
        for key in ("weights_bytes", "activation_bytes", "context_bytes", "share_bytes"):
            assert isinstance(model[key], int)
    llm = next(m for m in plan["models"] if m["kind"] == "llm")
    assert llm["weights_bytes"] == 16_381_470_720 and llm["kv_bytes"] > 0 and llm["kv_bytes_per_token"] == 73_728


def test_markdown_and_explain(run_cli):
    md = run_cli("plan", STACK, "--gpu-memory", "24GiB", "--markdown")
    assert md.returncode == 0 and "| model | kind |" in md.stdout and "**verdict**: FITS" in md.stdout
    explained = run_cli("plan", STACK, "--gpu", "rtx-4090", "--explain")
    assert "8,190,735,360 parameters" in explained.stdout and "2 (K and V) × 36 layers" in explained.stdout


def test_png_is_written(run_cli, tmp_path):
    out = tmp_path / "card.png"
    result = run_cli("plan", STACK, "--gpu", "rtx-4080", "--png", str(out))
    assert result.returncode == 1  # the picture is drawn for a stack that does not fit too
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_no_gpu_and_memory_auto_says_what_to_do(run_cli):
    result = run_cli("plan", STACK)
    assert result.returncode == 2
    assert "--gpu rtx-4090" in result.stderr and "Traceback" not in result.stderr


def test_gpus_lists_presets(run_cli):
    result = run_cli("gpus")
    assert result.returncode == 0 and "rtx-4090" in result.stdout and "h200" in result.stdout


BAD = {
    "bad yaml": ("models:\n  - name: q\n   kind: [llm\n", "not valid YAML at line 3"),
    "unknown key": ("models:\n  - {name: q, kind: llm, config: qwen3-8b, max_model_length: 9}\n",
                    "did you mean 'max_model_len'"),
    "negative size": ("models:\n  - {name: t, kind: tts, config: mms-tts-eng, memory: -1GiB}\n", "negative"),
    "two rest": ("models:\n  - {name: a, kind: llm, config: qwen3-8b}\n  - {name: b, kind: llm, config: qwen3-4b}\n",
                 "only one model can take memory: rest"),
    "voice names nothing": ("models:\n  - {name: a, kind: llm, config: qwen3-8b}\nvoice: {tts: ghost}\n",
                            "voice.tts names model 'ghost'"),
    "no config no card": ("models:\n  - {name: a, kind: llm, path: /nowhere/Unknown-7B}\n",
                          "no shipped model config matches it"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_message_and_exit_2(run_cli, tmp_path, case):
    text, expected = BAD[case]
    stack = tmp_path / "stack.yaml"
    stack.write_text(text)
    result = run_cli("plan", str(stack), "--gpu-memory", "24GiB")
    assert result.returncode == 2, result.stdout
    assert expected in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_missing_file_unknown_preset_and_bad_size(run_cli):
    missing = run_cli("plan", "configs/nope.yaml", "--gpu", "rtx-4090")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    preset = run_cli("plan", STACK, "--gpu", "rtx-9090")
    assert preset.returncode == 2 and "known presets" in preset.stderr
    size = run_cli("plan", STACK, "--gpu-memory", "lots")
    assert size.returncode == 2 and "512MiB" in size.stderr


def test_plan_replicas_shows_the_cluster_total(run_cli):
    """`--replicas N`: the per-replica plan (one card each) and the cluster's cards, bytes and KV tokens."""
    one = json.loads(run_cli("plan", STACK, "--gpu", "h100-80", "--json").stdout)
    four = run_cli("plan", STACK, "--gpu", "h100-80", "--json", "--replicas", "4")
    cluster = json.loads(four.stdout)
    assert four.returncode == 0 and cluster["replicas"] == 4
    assert cluster["cluster"] == {"cards": 4, "total_bytes": 4 * one["total_bytes"],
                                  "kv_tokens": 4 * sum(c["kv_tokens"] for c in one["cards"])}
    shown = run_cli("plan", STACK, "--gpu", "h100-80", "--replicas", "4")
    assert "4 replicas" in shown.stdout and "each replica fits its card" in shown.stdout
    refused = run_cli("plan", STACK, "--gpu", "h100-80", "--replicas", "0")
    assert refused.returncode == 2 and "at least 1 replica" in refused.stderr
