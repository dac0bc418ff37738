"""Incremental detokenization: whole characters only, stop strings found across token boundaries."""
from __future__ import annotations

import pytest

from engines.llm.detokenizer import IncrementalDetokenizer
from engines.llm.sampling_params import SamplingParams
from orchestrator.demo.tiny_llm import make_tokenizer

TEXT = "héllo wörld, naïve café 🎉 ünïcödé and the lazy dog"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def stream(tokenizer, ids: list[int], params: SamplingParams, prompt: list[int] = ()) -> tuple[list[str], IncrementalDetokenizer]:
    detok = IncrementalDetokenizer(tokenizer, list(prompt), params)
    pieces = []
    for i, token_id in enumerate(ids):
        detok.add_tokens([token_id])
        done = detok.stopped_by is not None or i == len(ids) - 1
        pieces.append(detok.delta(done))
        if detok.stopped_by:
            break
    return pieces, detok


def test_multibyte_characters_are_never_split(tokenizer):
    ids = [tokenizer.convert_tokens_to_ids(t) for t in tokenizer.convert_ids_to_tokens(
        tokenizer.encode(TEXT, add_special_tokens=False))]
    byte_ids = [tokenizer.convert_tokens_to_ids(c) for c in tokenizer.convert_ids_to_tokens(ids) for c in c]
    for sequence in (ids, byte_ids):  # whole BPE pieces, and one byte per token (emoji split in four)
        pieces, _ = stream(tokenizer, sequence, SamplingParams())
        assert "".join(pieces) == TEXT
        assert not any("\ufffd" in p for p in pieces)
    assert len(byte_ids) > len(TEXT)  # so some characters did arrive over several tokens


def test_stop_string_spanning_tokens(tokenizer):
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    pieces, detok = stream(tokenizer, ids, SamplingParams(stop=["café 🎉", "zzz"]))
    assert detok.stopped_by == "café 🎉"
    assert "".join(pieces) == detok.text == "héllo wörld, naïve "
    kept, detok = stream(tokenizer, ids, SamplingParams(stop=["naïve"], include_stop_str_in_output=True))
    assert "".join(kept) == "héllo wörld, naïve"


def test_possible_stop_prefix_is_held_back_until_it_is_not(tokenizer):
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    pieces, detok = stream(tokenizer, ids, SamplingParams(stop=["wörld, X"]))
    assert detok.stopped_by is None and "".join(pieces) == TEXT
    sent = ""
    for piece in pieces[:-1]:
        sent += piece
        assert TEXT.startswith(sent) and not sent.endswith("wörld, ")


def test_spacing_after_the_prompt(tokenizer):
    prompt = tokenizer.encode("the lazy", add_special_tokens=False)
    rest = tokenizer.encode(" dog and", add_special_tokens=False)
    pieces, _ = stream(tokenizer, rest, SamplingParams(), prompt)
    assert "".join(pieces) == " dog and"
