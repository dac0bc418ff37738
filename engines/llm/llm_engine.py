"""The synchronous engine: add requests, abort them, and step: schedule, run the model, stream outputs."""
from __future__ import annotations

import json
import logging
from concurrent.futures import Future
from pathlib import Path
from typing import Any, ClassVar

import torch

from budget.rope import context_error
from engines.base import Engine
from engines.errors import EngineInputError
from engines.llm.block_manager import BlockManager
from engines.llm.config import EngineConfig
from engines.llm.detokenizer import IncrementalDetokenizer
from engines.llm.model_runner import ModelRunner
from engines.llm.models.loader import read_config
from engines.llm.outputs import CompletionOutput, EngineStats, RequestOutput, TimeHistogram, TokenLogprob
from engines.llm.sampler import SampledToken
from engines.llm.sampling_params import SamplingParams
from engines.llm.scheduler import Scheduler
from engines.llm.requests import Priority
from engines.llm.sequence import Sequence
from engines.llm.structured_output import GrammarCompiler
from engines.llm.tokenizer import load_tokenizer

log = logging.getLogger(__name__)


class LLMEngine(Engine):
    """`LLMEngine(config)` is ready to serve (loaded, pool allocated, warmed up); `start=False` leaves that to the
    lifecycle calls, as the supervisor makes them."""

    kind: ClassVar[str] = "llm"

    def __init__(self, config: EngineConfig, start: bool = True) -> None:
        self.config, self.device = config, config.device
        self.runner: ModelRunner | None = None
        self.requests: dict[str, tuple[Sequence, IncrementalDetokenizer]] = {}
        self.grammars: GrammarCompiler | None = None
        self._grammar_times = (TimeHistogram(), TimeHistogram())  # compile, mask: since start
        self._warm = False
        if start:
            self.load()
            self.warmup()

    @classmethod
    def from_spec(cls, spec, device: str | None, kv_bytes: int) -> LLMEngine:
        """A stack file's LLM entry with the KV bytes its plan gave it; not loaded yet."""
        return cls(EngineConfig.from_spec(spec, kv_bytes, device), start=False)

    def load(self) -> None:
        """Weights onto the device and the KV pool of exactly the configured bytes; errors say what to change."""
        if self.runner is not None:
            return
        config, path = self.config, Path(self.config.model)
        hf_config = read_config(path)
        config.max_model_len = config.max_model_len or hf_config.get("max_position_embeddings") or 0
        if (error := context_error(hf_config, config.max_model_len)) is not None:
            raise ValueError(error)
        config.kv_torch_dtype(hf_config)  # a KV dtype this card cannot hold is refused before the weights load
        torch.manual_seed(config.seed)
        self.tokenizer = None if config.skip_tokenizer_init else load_tokenizer(path)
        self.eos_token_ids = _eos_token_ids(path, hf_config, self.tokenizer)
        self.runner = ModelRunner(config, hf_config)
        if self.runner.num_blocks * config.block_size < config.max_model_len:
            raise ValueError(f"the KV pool holds {self.runner.num_blocks * config.block_size:,} tokens, fewer than "
                             f"max_model_len {config.max_model_len:,}; lower max_model_len or give the LLM more memory")
        self.block_manager = BlockManager(self.runner.num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, config.max_num_seqs, config.max_num_batched_tokens)

    def warmup(self) -> None:
        """A full token budget of prefill, then (on CUDA) the decode graphs: the peak is measured, not guessed."""
        if self._warm:
            return
        self.runner.warmup()
        if self.runner.device.type == "cuda" and not self.config.enforce_eager:
            self.runner.capture_cudagraphs()
        self._warm = True

    def close(self) -> None:
        """Drop the model, the pool and the graphs; safe to call twice."""
        for request_id in list(self.requests):
            self.abort_request(request_id)
        if self.runner is not None:
            self.runner.masks.close()
        if self.grammars is not None:
            self.grammars.close()
        self.runner, self.grammars = None, None
        self._warm = False

    def compile_grammar(self, params: SamplingParams) -> Future:
        """Start compiling the request's grammar (off the caller's thread); its future gives the request's matcher."""
        spec = params.structured_outputs
        if self.tokenizer is None:
            raise EngineInputError("this engine was started with skip_tokenizer_init, so it cannot hold the output to "
                                   "a grammar; leave out structured outputs", spec.param)
        if self.grammars is None:  # made at the first structured request (its vocabulary on its own threads)
            self.grammars = GrammarCompiler(self.tokenizer, self.runner.model.config["vocab_size"],
                                            self.eos_token_ids)
        return self.grammars.compile(spec)

    def add_request(self, request_id: str, prompt: str | list[int], params: SamplingParams | None = None,
                    priority: Priority | str = Priority.INTERACTIVE, grammar: Any = None) -> None:
        """Queue a request; raises EngineInputError (with what to change) if it can never run.

        `grammar`: its compiled matcher (compile_grammar), when structured outputs were compiled beforehand; without
        it, a grammar is compiled here, blocking (offline use)."""
        if request_id in self.requests:
            raise EngineInputError(f"request id {request_id!r} is already in flight", "request_id")
        params = params or SamplingParams()
        if isinstance(prompt, str) and self.tokenizer is None:
            raise EngineInputError("this engine was started with skip_tokenizer_init; send token ids, not text")
        token_ids = self.tokenizer.encode(prompt, add_special_tokens=False) if isinstance(prompt, str) else list(prompt)
        if not token_ids:
            raise EngineInputError("the prompt is empty")
        vocab = self.runner.model.config["vocab_size"]
        if min(token_ids) < 0 or max(token_ids) >= vocab:
            raise EngineInputError(f"prompt token ids must be in [0, {vocab}); got one outside")
        if params.logit_bias and not all(0 <= t < vocab for t in params.logit_bias):
            raise EngineInputError(f"logit_bias keys must be token ids of this model, 0 to {vocab - 1}", "logit_bias")
        if len(token_ids) >= self.config.max_model_len:
            raise EngineInputError(f"the prompt has {len(token_ids)} tokens; this model's context is "
                                   f"{self.config.max_model_len}, so at most {self.config.max_model_len - 1} fit")
        if isinstance(priority, str):
            if priority.upper() not in Priority.__members__:
                raise EngineInputError(f"priority must be 'interactive' or 'batch', got {priority!r}", "priority")
            priority = Priority[priority.upper()]
        seq = Sequence(request_id, token_ids, params, priority)
        if params.structured_outputs is not None:
            seq.grammar = grammar if grammar is not None else self.compile_grammar(params).result()
        self.requests[request_id] = (seq, IncrementalDetokenizer(self.tokenizer, token_ids, params))
        self.scheduler.add(seq)

    def abort_request(self, request_id: str) -> bool:
        """End a request now; its KV blocks are free when this returns. False if it is unknown or done."""
        entry = self.requests.pop(request_id, None)
        if entry is None:
            return False
        self.scheduler.finish(entry[0], "abort")
        return True

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished()

    def stats(self) -> EngineStats:
        bm, sched = self.block_manager, self.scheduler
        if self.grammars is not None:
            compiled, self.grammars.compile_seconds = self.grammars.compile_seconds, []
            masked, self.runner.masks.fill_seconds = self.runner.masks.fill_seconds, []
            self._grammar_times = (self._grammar_times[0].plus(compiled), self._grammar_times[1].plus(masked))
        return EngineStats(bm.num_used, len(bm.free), len(bm.cached), len(sched.running), sched.num_waiting,
                           sched.num_preemptions, *self._grammar_times)

    def step(self) -> list[RequestOutput]:
        batch = self.scheduler.schedule()
        if not batch:
            return []
        sampled = iter(self.runner.run(batch))
        outputs = []
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            seq.num_computed_tokens += n
            self.block_manager.commit(seq)
            if seq.num_computed_tokens == seq.num_tokens:
                outputs.append(self._append(seq, next(sampled)))
        return outputs

    def _append(self, seq: Sequence, token: SampledToken) -> RequestOutput:
        seq.token_ids.append(token.token_id)
        _, detok = self.requests[seq.request_id]
        detok.add_tokens([token.token_id])
        p, reason, stop_reason = seq.params, None, None
        if seq.grammar is not None and not seq.grammar.consume_token(token.token_id):
            log.warning("request %s: token %d is outside its grammar; ending it", seq.request_id, token.token_id)
        if detok.stopped_by is not None:
            reason, stop_reason = "stop", detok.stopped_by
        elif token.token_id in p.stop_token_ids or (not p.ignore_eos and token.token_id in self.eos_token_ids):
            reason, stop_reason = "stop", (token.token_id if token.token_id in p.stop_token_ids else None)
        elif seq.grammar is not None and (seq.grammar.is_stopped() or seq.grammar.is_error()):
            reason = "stop"  # the grammar is complete and allows nothing more (or was broken: it cannot go on)
        elif (p.max_tokens is not None and seq.num_output_tokens >= p.max_tokens) \
                or seq.num_tokens >= self.config.max_model_len:
            reason = "length"
        if reason:
            self.scheduler.finish(seq, reason)
            del self.requests[seq.request_id]
        logprobs = [TokenLogprob(token.token_id, token.logprob, token.top_logprobs)] if token.logprob is not None else []
        return RequestOutput(seq.request_id, detok.delta(reason is not None), [token.token_id], seq.num_output_tokens,
                             seq.num_prompt_tokens, seq.num_cached_tokens, reason is not None, reason, stop_reason,
                             logprobs)

    def generate(self, prompts: list[str | list[int]], params: SamplingParams | list[SamplingParams] | None = None
                 ) -> list[CompletionOutput]:
        """Run prompts to completion (offline use, tests, benchmarks); returns the whole outputs in order."""
        params_list = params if isinstance(params, list) else [params] * len(prompts)
        ids = [f"generate-{id(self)}-{i}" for i in range(len(prompts))]
        for rid, prompt, p in zip(ids, prompts, params_list):
            self.add_request(rid, prompt, p)
        steps: dict[str, list[RequestOutput]] = {rid: [] for rid in ids}
        while self.has_unfinished_requests():
            for out in self.step():
                steps[out.request_id].append(out)
        return [CompletionOutput.join(steps[rid]) for rid in ids]


def _eos_token_ids(path: Path, hf_config: dict, tokenizer) -> set[int]:
    """EOS ids from generation_config.json (often several for chat models), config.json and the tokenizer."""
    ids: set[int] = set()
    generation = path / "generation_config.json"
    for source in (json.loads(generation.read_text()) if generation.is_file() else {}, hf_config):
        value = source.get("eos_token_id")
        ids.update(value if isinstance(value, list) else [value] if value is not None else [])
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
