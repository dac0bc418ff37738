"""Constrained decoding on llguidance: a request's grammar compiled off the step loop, its token mask filled on the
CPU (beside the forward pass when a GPU runs it), and applied to the logits before any sampling.

llguidance (MIT) over xgrammar (Apache-2.0), measured by `bench/grammar_libraries.py` on the demo tokenizers:
xgrammar fills a mask faster (2-3 µs against 12-18 µs, both far under a step), llguidance compiles a schema
2-7x faster (tools change per request, so compiles are not rare), has no dependencies (xgrammar brings
torch, triton and apache-tvm-ffi pins of its own), and its lazy Lark rules constrain a tool call from the
moment the model opens it, in free text.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import llguidance
import llguidance.hf
import numpy as np
import torch
from jsonschema import SchemaError
from jsonschema.validators import validator_for

from engines.errors import EngineInputError
from engines.llm.sampling_params import JSON_STYLE, StructuredOutputsParams

log = logging.getLogger(__name__)

CACHE_SIZE = 256           # compiled grammars kept, most recently used first


def grammar_of(spec: StructuredOutputsParams) -> str:
    """The llguidance grammar a request's structured output asks for; EngineInputError names what is wrong."""
    try:
        if spec.json is not None:
            schema = json.loads(spec.json)
            if not isinstance(schema, dict | bool):
                raise EngineInputError(f"{spec.param}: a JSON Schema is an object (or true/false)", spec.param)
            if isinstance(schema, dict):
                validator_for(schema).check_schema(schema)
            return llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_STYLE)
        if spec.json_object:
            return llguidance.LLMatcher.grammar_from_json_schema({"type": "object"}, overrides=JSON_STYLE)
        if spec.regex is not None:
            return llguidance.LLMatcher.grammar_from_regex(spec.regex)
        if spec.choice is not None:
            return llguidance.grammar_from("choice", json.dumps(list(spec.choice)))
        return llguidance.grammar_from("grammar", spec.grammar)
    except SchemaError as error:
        raise EngineInputError(f"{spec.param} is not a valid JSON Schema: {error.message}", spec.param) from None
    except ValueError as error:
        if isinstance(error, EngineInputError):
            raise
        raise EngineInputError(f"{spec.param} could not be read: {error}", spec.param) from None


class GrammarCompiler:
    """Compiles grammars on its own threads, each once (cached by its text); every request gets a fresh copy."""

    def __init__(self, tokenizer, vocab_size: int, eos_token_ids: set[int]) -> None:
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="grammar")
        # The vocabulary as llguidance reads it: 0.3-1.3 s for 50k-150k tokens, made on the grammar threads.
        self._lexicon = self._pool.submit(self._prepare, tokenizer, vocab_size, sorted(eos_token_ids))
        self._cache: OrderedDict[str, Future[llguidance.LLMatcher]] = OrderedDict()
        self._lock = threading.Lock()
        self.compile_seconds: list[float] = []  # compiles finished since the engine last reported them

    @staticmethod
    def _prepare(tokenizer, vocab_size: int, eos: list[int]) -> llguidance.LLTokenizer:
        started = time.perf_counter()
        lexicon = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=eos)
        log.info("grammar vocabulary ready in %.2f s", time.perf_counter() - started)
        return lexicon

    def compile(self, spec: StructuredOutputsParams) -> Future[llguidance.LLMatcher]:
        """A future of the request's own matcher; it fails with EngineInputError when the grammar cannot be used."""
        grammar = grammar_of(spec)
        with self._lock:
            compiled = self._cache.get(grammar)
            if compiled is None:
                compiled = self._cache[grammar] = self._pool.submit(self._build, grammar, spec.param)
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(grammar)
        mine: Future[llguidance.LLMatcher] = Future()

        def copy(done: Future) -> None:
            error = done.exception()
            if error is not None:
                mine.set_exception(error)
            else:
                mine.set_result(done.result().deep_copy())

        compiled.add_done_callback(copy)
        return mine

    def _build(self, grammar: str, param: str) -> llguidance.LLMatcher:
        try:
            lexicon = self._lexicon.result()
        except ValueError as error:  # a tokenizer that does not fit the model's vocabulary (test models)
            raise EngineInputError(f"this model cannot hold its output to a grammar: {error}", param) from None
        started = time.perf_counter()
        matcher = llguidance.LLMatcher(lexicon, grammar, log_level=0)
        self.compile_seconds.append(time.perf_counter() - started)
        if matcher.is_error():
            raise EngineInputError(f"{param} cannot be used to constrain the output: {_first_line(matcher.get_error())}",
                                   param)
        return matcher

    def forget(self, spec: StructuredOutputsParams) -> None:
        """Drop a grammar whose compile was given up on, so the next request for it starts afresh."""
        with self._lock:
            self._cache.pop(grammar_of(spec), None)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _first_line(error: str) -> str:
    return error.strip().splitlines()[0][:500] if error.strip() else "the grammar library gave no reason"


@dataclass(slots=True)
class StepMasks:
    """A step's grammar masks: one bitmask row per constrained sampled row (`rows`, in the step's sampling order)."""
    rows: list[int]
    bitmask: torch.Tensor      # int32 [len(rows), words]; bit t of a row: token t is allowed


class MaskFiller:
    """Fills the allowed-token bitmasks of a step's constrained rows: on its own thread beside the forward pass when
    the model runs on a GPU (the CPU is idle meanwhile); inline when the CPU runs the model too. On 2 CPU cores a
    mask filled beside the forward pass took 90 µs of CPU against 10 µs alone (both walk memory the other needs),
    and slowed the forward pass: inline is cheaper there."""

    def __init__(self, vocab_size: int, overlap: bool) -> None:
        self.words = (vocab_size + 31) // 32
        self.overlap = overlap
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="grammar-mask")
        self._executor = llguidance.LLExecutor()
        self._buffer = torch.empty((0, self.words), dtype=torch.int32)  # reused; grows to the most rows seen
        self.fill_seconds: list[float] = []  # per step with constrained rows, not reported yet

    def start(self, matchers: list[llguidance.LLMatcher | None]) -> Future[StepMasks] | None:
        """Begin the masks of a step's sampled rows (None: that row is free); None when no row is constrained."""
        rows = [row for row, matcher in enumerate(matchers) if matcher is not None]
        if not rows:
            return None
        if self.overlap:
            return self._thread.submit(self._fill, [matchers[row] for row in rows], rows)
        done: Future[StepMasks] = Future()
        done.set_result(self._fill([matchers[row] for row in rows], rows))
        return done

    def _fill(self, matchers: list[llguidance.LLMatcher], rows: list[int]) -> StepMasks:
        started = time.perf_counter()
        if self._buffer.shape[0] < len(rows):
            self._buffer = torch.empty((len(rows), self.words), dtype=torch.int32)
        bitmask = self._buffer[:len(rows)]
        if len(rows) == 1:  # one row: no fan-out across llguidance's threads
            matchers[0].unsafe_compute_mask_ptr(bitmask.data_ptr(), self.words * 4)
        else:
            self._executor.unsafe_compute_mask_ptr([(m, i) for i, m in enumerate(matchers)], bitmask.data_ptr(),
                                                   self.words * 4, len(rows))
        self.fill_seconds.append(time.perf_counter() - started)
        return StepMasks(rows, bitmask)

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)


_BITS = torch.arange(32, dtype=torch.int32)


def apply_masks(logits: torch.Tensor, masks: StepMasks) -> torch.Tensor:
    """-inf for every token a row's grammar does not allow now (only the constrained rows are unpacked)."""
    vocab = logits.shape[1]
    if logits.device.type == "cpu":  # numpy's unpackbits: twice as fast as shifting in torch here
        bits = np.unpackbits(masks.bitmask.numpy().view(np.uint8), axis=-1, bitorder="little")[:, :vocab]
        banned = torch.from_numpy(bits.view(np.bool_)).logical_not_()
    else:
        words = masks.bitmask.to(logits.device, non_blocking=True)
        banned = ((words.unsqueeze(-1) >> _BITS.to(logits.device)) & 1).view(len(masks.rows), -1)[:, :vocab] == 0
    logits = logits.clone()
    for i, row in enumerate(masks.rows):
        logits[row].masked_fill_(banned[i], float("-inf"))
    return logits
