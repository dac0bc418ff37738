import pytest

from orchestrator.stack import LLMSpec
from orchestrator.stack_file import StackError, load_stack, parse_stack
from tests.conftest import CONFIGS

MINIMAL = "models:\n  - {name: q, kind: llm, card: qwen3-0.6b}\n"


@pytest.mark.parametrize("name", ["vtuber-24gb.yaml", "vtuber-16gb.yaml", "vtuber-12gb.yaml", "vtuber-80gb.yaml"])
def test_shipped_stacks_load(name):
    stack = load_stack(CONFIGS / name)
    assert {m.kind for m in stack.models} == {"llm", "asr", "tts", "embedding", "vad"}
    assert stack.voice.llm == next(m.name for m in stack.models if m.kind == "llm")


def test_defaults_llm_takes_rest_and_others_auto():
    stack = parse_stack(MINIMAL + "  - {name: w, kind: asr, card: whisper-small}\n")
    assert isinstance(stack.models[0], LLMSpec)
    assert stack.models[0].memory.mode == "rest" and stack.models[1].memory.mode == "auto"
    assert stack.server.port == 12345 and stack.gpu.reserve == 1 << 30


def test_memory_forms():
    stack = parse_stack("models:\n  - {name: a, kind: tts, memory: 512MiB}\n  - {name: b, kind: asr, memory: 15%}\n"
                        "  - {name: c, kind: embedding, memory: 1.5GB}\n")
    assert [(m.memory.mode, m.memory.value) for m in stack.models] == [
        ("bytes", 512 << 20), ("percent", 15), ("bytes", 1_500_000_000)]


def test_unknown_key_names_the_closest_valid_one():
    with pytest.raises(StackError) as err:
        parse_stack("models:\n  - name: q\n    kind: llm\n    max_model_length: 4096\n")
    assert "line 4" in str(err.value) and "'max_model_length'" in str(err.value)
    assert "did you mean 'max_model_len'" in str(err.value)


def test_unknown_top_level_and_section_keys():
    with pytest.raises(StackError) as err:
        parse_stack(MINIMAL + "gpu: {reserv: 1GiB}\nmodel: []\n")
    text = str(err.value)
    assert "did you mean 'reserve'" in text and "did you mean 'models'" in text


def test_yaml_errors_carry_the_line():
    with pytest.raises(StackError, match=r"line 3, column"):
        parse_stack("models:\n  - name: q\n   kind: [llm\n")


def test_negative_size():
    with pytest.raises(StackError, match="negative"):
        parse_stack("models:\n  - {name: q, kind: tts, memory: -2GiB}\n")


def test_two_rest_models():
    with pytest.raises(StackError, match="only one model can take memory: rest"):
        parse_stack(MINIMAL + "  - {name: r, kind: llm, card: qwen3-0.6b}\n")


def test_rest_is_for_the_llm_only():
    with pytest.raises(StackError, match="only an LLM"):
        parse_stack("models:\n  - {name: t, kind: tts, memory: rest}\n")


def test_voice_names_a_missing_model():
    with pytest.raises(StackError, match="voice.asr names model 'whisper', which is not in models"):
        parse_stack(MINIMAL + "voice: {asr: whisper, llm: q}\n")


def test_voice_role_kind_mismatch():
    with pytest.raises(StackError, match="kind llm"):
        parse_stack(MINIMAL + "voice: {tts: q}\n")


def test_unknown_kind_and_missing_kind():
    with pytest.raises(StackError) as err:
        parse_stack("models:\n  - {name: a, kind: stt}\n  - {name: b}\n")
    assert "kind 'stt' is not one of llm, asr, tts, embedding, vad" in str(err.value)
    assert "missing `kind`" in str(err.value)


def test_duplicate_names():
    with pytest.raises(StackError, match="used twice"):
        parse_stack(MINIMAL + "  - {name: q, kind: tts}\n")


def test_env_expansion(monkeypatch):
    monkeypatch.setenv("ORCH_TEST_KEY", "genshin")
    stack = parse_stack("server: {api_key: '${ORCH_TEST_KEY}'}\n" + MINIMAL)
    assert stack.server.api_key == "genshin"
    monkeypatch.delenv("ORCH_TEST_KEY")
    assert parse_stack("server: {api_key: '${ORCH_TEST_KEY:-}'}\n" + MINIMAL).server.api_key == ""
    with pytest.raises(StackError, match="ORCH_TEST_KEY is not set"):
        parse_stack("server: {api_key: '${ORCH_TEST_KEY}'}\n" + MINIMAL)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(StackError, match="does not exist"):
        load_stack(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(StackError, match="must be a YAML mapping"):
        load_stack(tmp_path / "list.yaml")
