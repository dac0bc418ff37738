"""Every shipped model config gives its model's published parameter count, and transformers agrees exactly."""
import json

import pytest
import torch
import transformers

from budget.architectures import bert_parameters, llm_parameters, vits_parameters, whisper_parameters
from budget.model_files import MODEL_CONFIGS_DIR, known_configs
from budget.estimators.llm import estimate_llm
from orchestrator.stack import LLMSpec

# Published figures: the "Number of Parameters" (and non-embedding) lines of each model card, or the
# parameter count the Hugging Face model page shows, at the precision they were published with.
PUBLISHED = {
    "qwen3-0.6b": ("0.6B", "0.44B"), "qwen3-1.7b": ("1.7B", "1.4B"), "qwen3-4b": ("4.0B", "3.6B"),
    "qwen3-8b": ("8.2B", "6.95B"), "qwen3-8b-awq": ("8.2B", "6.95B"), "qwen3-14b": ("14.8B", "13.2B"), "qwen2.5-7b-instruct": ("7.61B", "6.53B"),
    "llama-3.1-8b-instruct": ("8.03B", None), "whisper-large-v3-turbo": ("809M", None),
    "whisper-small": ("242M", None), "all-minilm-l6-v2": ("22.7M", None), "mms-tts-eng": ("36.3M", None),
}


def _config(name: str) -> dict:
    return json.loads((MODEL_CONFIGS_DIR / name / "config.json").read_text())


def _count(cfg: dict) -> int:
    counter = {"whisper": whisper_parameters, "bert": bert_parameters, "vits": vits_parameters}.get(cfg["model_type"])
    return counter(cfg) if counter else llm_parameters(cfg)[0]


def _matches(value: int, published: str) -> bool:
    """True when `value` is the published figure ("8.2B", "809M") to within its last digit (cards round or cut)."""
    number, unit = published[:-1], {"B": 1e9, "M": 1e6}[published[-1]]
    last_digit = 10.0 ** -len(number.partition(".")[2])
    return abs(value / unit - float(number)) < last_digit


def test_every_config_is_checked():
    assert set(known_configs()) == set(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_config_matches_published_figure(name):
    cfg = _config(name)
    total = _count(cfg)
    published, published_body = PUBLISHED[name]
    assert _matches(total, published), (name, total, published)
    if published_body:
        body = total - llm_parameters(cfg)[1]
        assert _matches(body, published_body), (name, body, published_body)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_config_count_equals_transformers(name):
    cfg = _config(name)
    config = transformers.AutoConfig.for_model(**cfg)
    model_class = {"whisper": transformers.WhisperForConditionalGeneration, "bert": transformers.BertModel,
                   "vits": transformers.VitsModel}.get(cfg["model_type"], transformers.AutoModelForCausalLM)
    with torch.device("meta"):
        model = (model_class.from_config(config) if model_class is transformers.AutoModelForCausalLM
                 else model_class(config))
    assert sum(p.numel() for p in model.parameters()) == _count(cfg)


def test_qwen3_8b_facts():
    est = estimate_llm(LLMSpec(name="q", kind="llm", config="qwen3-8b"), on_gpu=True)
    assert est.parameters == 8_190_735_360
    assert est.weights_bytes == 16_381_470_720
    assert est.kv_bytes_per_token == 147_456 and est.dtype == "bfloat16"
    fp8 = estimate_llm(LLMSpec(name="q", kind="llm", config="qwen3-8b", kv_cache_dtype="fp8"), on_gpu=True)
    assert fp8.kv_bytes_per_token == 73_728


def test_qwen3_8b_awq_is_planned_as_the_int4_groups_it_holds():
    """Qwen/Qwen3-8B-AWQ's config.json (GEMM, 4-bit, groups of 128, float16) is planned without its files: the
    projections as int4 codes with a bfloat16 scale and zero per 32 inputs, embeddings and head as stored (16-bit)."""
    est = estimate_llm(LLMSpec(name="q", kind="llm", config="qwen3-8b-awq"), on_gpu=True)
    h, inter, layers, vocab = 4096, 12288, 36, 151936
    shapes = [(4096 + 2 * 1024, h), (h, 4096), (2 * inter, h), (h, inter)]
    packed = layers * sum(rows * cols // 2 + rows * (cols // 32) * 2 * 2 for rows, cols in shapes)
    dense = (8_190_735_360 - layers * sum(rows * cols for rows, cols in shapes)) * 2
    assert dense == (2 * vocab * h + layers * (2 * h + 2 * 128) + h) * 2   # embeddings, head, norms
    assert est.weights_bytes == packed + dense and est.dtype == "float16"
    assert est.storage.startswith("awq-int4-g128")


def test_head_dim_from_config_is_respected():
    """Qwen3-0.6B: hidden 1024 / 16 heads would say 64, but its head_dim is 128."""
    est = estimate_llm(LLMSpec(name="q", kind="llm", config="qwen3-0.6b"), on_gpu=False)
    assert est.kv_bytes_per_token == 2 * 28 * 8 * 128 * 2
    assert est.graph_bytes == 0  # no CUDA graphs on CPU


def test_config_names_a_shipped_config_and_the_old_card_key_still_reads():
    """`config:` names a file in configs/models/ ("card" now means a GPU only); a stack written with `card:` loads."""
    assert LLMSpec(name="q", kind="llm", config="qwen3-8b").config == "qwen3-8b"
    assert LLMSpec.model_validate({"name": "q", "kind": "llm", "card": "qwen3-8b"}).config == "qwen3-8b"
