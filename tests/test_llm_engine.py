"""The engine as a caller drives it: seeded sampling, stops, abort, priorities, errors, streaming."""
from __future__ import annotations

import asyncio
import re

import pytest
import torch

from engines.errors import EngineFailedError
from engines.llm import AsyncLLM, EngineConfig, LLMEngine, Priority, SamplingParams
from engines.llm.sampling_params import StructuredOutputsParams


@pytest.fixture(scope="module")
def llm(tiny_models) -> LLMEngine:
    return LLMEngine(EngineConfig(str(tiny_models["qwen3"]), dtype="float32", num_kv_blocks=64, max_model_len=256,
                                  max_num_seqs=8))


def run_alone(llm: LLMEngine, prompt: str, params: SamplingParams) -> list[int]:
    return llm.generate([prompt], params)[0].token_ids


def test_seeded_sampling_ignores_the_rest_of_the_batch(llm):
    seeded = SamplingParams(temperature=1.0, top_p=0.9, seed=1234, max_tokens=16, ignore_eos=True)
    alone = run_alone(llm, "Hello there", seeded)
    others = [SamplingParams(temperature=1.3, max_tokens=n, ignore_eos=True) for n in (5, 20, 9)]
    crowd = llm.generate(["Voice agents", "Hello there", "The quick brown", "fox"], others[:1] + [seeded] + others[1:])
    assert crowd[1].token_ids == alone
    assert run_alone(llm, "Hello there", SamplingParams(temperature=1.0, top_p=0.9, seed=99, max_tokens=16,
                                                        ignore_eos=True)) != alone


def test_top_k_one_and_temperature_zero_agree(llm):
    greedy = run_alone(llm, "Voice", SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    assert run_alone(llm, "Voice", SamplingParams(temperature=0.8, top_k=1, max_tokens=8, ignore_eos=True)) == greedy


def test_penalties_change_what_repeats(llm):
    base = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    plain = run_alone(llm, "Hello", base)
    penalized = run_alone(llm, "Hello", SamplingParams(temperature=0, max_tokens=24, ignore_eos=True,
                                                       frequency_penalty=2.0, presence_penalty=2.0))
    assert len(set(penalized)) >= len(set(plain)) and penalized != plain


def test_stop_string_across_tokens_is_cut_and_never_streamed(llm):
    free = llm.generate(["The quick"], SamplingParams(temperature=0, max_tokens=20, ignore_eos=True))[0]
    stop = free.text[5:8]
    llm.add_request("s", "The quick", SamplingParams(temperature=0, max_tokens=20, ignore_eos=True, stop=[stop]))
    streamed, last = "", None
    while llm.has_unfinished_requests():
        for out in llm.step():
            streamed += out.delta_text
            last = out
    assert last.finish_reason == "stop" and last.stop_reason == stop
    assert streamed == free.text[: free.text.find(stop)]


def test_max_tokens_and_eos_finish_reasons(llm):
    out = llm.generate(["Hello"], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))[0]
    assert out.finish_reason == "length" and len(out.token_ids) == 3
    first = out.token_ids[0]
    stopped = llm.generate(["Hello"], SamplingParams(temperature=0, max_tokens=3, stop_token_ids=[first]))[0]
    assert stopped.finish_reason == "stop" and stopped.stop_reason == first and stopped.token_ids == [first]


def test_abort_frees_blocks_at_once_and_others_go_on(llm):
    params = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
    llm.add_request("keep", "Hello there", params)
    llm.add_request("drop", "The quick brown fox jumps over the lazy dog.", params)
    llm.add_request("queued", "never runs", params)
    llm.step()
    used = llm.block_manager.num_used
    assert llm.abort_request("drop") and llm.abort_request("queued")
    assert llm.block_manager.num_used < used
    assert not llm.abort_request("drop")
    finals = [o for _ in range(40) for o in llm.step() if o.finished]
    assert [o.request_id for o in finals] == ["keep"] and finals[0].num_output_tokens == 30
    assert llm.block_manager.num_used == 0 and not llm.has_unfinished_requests()
    llm.block_manager.check()


def test_interactive_request_preempts_batch_work(tiny_models):
    llm = LLMEngine(EngineConfig(str(tiny_models["qwen3"]), dtype="float32", num_kv_blocks=64, max_model_len=256,
                                 max_num_seqs=2))
    long = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    llm.add_request("b1", "batch one", long, priority="batch")
    llm.add_request("b2", "batch two", long, priority=Priority.BATCH)
    llm.step()
    llm.add_request("voice", "Hello", SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))
    first = llm.step()
    assert "voice" in [o.request_id for o in first]
    assert llm.scheduler.num_preemptions == 1
    finished = [o.request_id for _ in range(100) for o in llm.step() if o.finished]
    assert finished[0] == "voice" and sorted(finished) == ["b1", "b2", "voice"]


def test_a_preempted_constrained_request_keeps_its_grammar_state(tiny_models):
    """Batch requests held to a regex are preempted by a voice turn and recomputed: the grammar saw each token once
    (its state is the output's, not redone), so every output still matches whole."""
    llm = LLMEngine(EngineConfig(str(tiny_models["qwen3"]), dtype="float32", num_kv_blocks=64, max_model_len=256,
                                 max_num_seqs=2))
    pattern = "(ab|cd){10,14}!"
    held = SamplingParams(temperature=1.0, seed=3, max_tokens=80,
                          structured_outputs=StructuredOutputsParams(regex=pattern))
    llm.add_request("b1", "batch one", held, priority="batch")
    llm.add_request("b2", "batch two", held, priority=Priority.BATCH)
    texts: dict[str, str] = {}
    for step in range(300):
        if step == 3:
            llm.add_request("voice", "Hello", SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))
        for out in llm.step():
            texts[out.request_id] = texts.get(out.request_id, "") + out.delta_text
        if not llm.has_unfinished_requests():
            break
    assert llm.scheduler.num_preemptions >= 1
    assert re.fullmatch(pattern, texts["b1"]) and re.fullmatch(pattern, texts["b2"]), texts


@pytest.mark.parametrize("prompt, params, message", [
    ("x" * 400, SamplingParams(), "at most 255"),
    ([], SamplingParams(), "empty"),
    ([10**6], SamplingParams(), "token ids must be in"),
])
def test_requests_that_can_never_run_are_refused(llm, prompt, params, message):
    with pytest.raises(ValueError, match=message):
        llm.add_request("bad", prompt, params)
    with pytest.raises(ValueError, match="interactive' or 'batch"):
        llm.add_request("bad", "Hello", params, priority="urgent")
    assert not llm.has_unfinished_requests()


@pytest.mark.parametrize("field, value", [("temperature", -1), ("top_p", 0), ("max_tokens", 0), ("logprobs", 99),
                                          ("repetition_penalty", 0), ("stop", [""])])
def test_bad_sampling_params_say_what_is_wrong(field, value):
    with pytest.raises(ValueError, match=field.split("_")[0]):
        SamplingParams(**{field: value})


def test_async_streams_and_aborts_on_close(tiny_models):
    llm = AsyncLLM.from_config(EngineConfig(str(tiny_models["qwen3"]), dtype="float32", num_kv_blocks=64,
                                            max_model_len=256))

    async def main():
        params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
        pieces = [out async for out in llm.generate("Hello there", params)]
        assert len(pieces) == 8 and pieces[-1].finished and [p.num_output_tokens for p in pieces] == list(range(1, 9))
        assert all(len(p.delta_token_ids) == 1 for p in pieces)
        endless = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)
        stream = llm.generate("Voice", endless, request_id="barge-in")
        async for out in stream:
            break
        await stream.aclose()
        with pytest.raises(ValueError, match="empty"):
            async for _ in llm.generate([], params):
                pass
        with pytest.raises(ValueError, match="could not be added"):  # a malformed prompt ends that request only
            async for _ in llm.generate(["not", "ids"], params):
                pass
        both = await asyncio.gather(*[_collect(llm.generate(p, params)) for p in ("a", "b c")])
        assert all(len(b) == 8 for b in both)

    try:
        asyncio.run(main())
        for _ in range(50):
            if not llm.engine.has_unfinished_requests():
                break
            asyncio.run(asyncio.sleep(0.02))
        assert not llm.engine.has_unfinished_requests() and llm.engine.block_manager.num_used == 0
    finally:
        llm.shutdown()


async def _collect(stream) -> list:
    return [out async for out in stream]


def test_kv_pool_is_exactly_the_plans_share(tiny_models):
    from budget.planner import plan_stack
    from budget.units import parse_size
    from orchestrator.stack_file import parse_stack

    stack = parse_stack(f"""
gpu: {{device: cpu, memory: 2GiB}}
models:
  - {{name: tiny, kind: llm, path: {tiny_models['qwen3']}, memory: 400MiB, dtype: float32, max_model_len: 1024,
     max_num_seqs: 4}}
""")
    plan = plan_stack(stack, parse_size("2GiB"), "test")
    assert plan.fits and plan.kv_blocks > 0
    llm = LLMEngine(EngineConfig.from_spec(stack.models[0], plan.models[0].kv_bytes, device="cpu"))
    pool = llm.runner.kv_cache
    assert pool.numel() * pool.element_size() == plan.models[0].kv_bytes
    assert llm.block_manager.num_blocks == plan.kv_blocks
    assert llm.generate(["Hello"], SamplingParams(max_tokens=4, ignore_eos=True))[0].finish_reason == "length"


def test_fp8_kv_cache_halves_the_pool_and_still_decodes(tiny_models):
    make = lambda kv: LLMEngine(EngineConfig(str(tiny_models["qwen3"]), dtype="float32", kv_cache_bytes=1 << 20,  # noqa: E731
                                             max_model_len=256, kv_cache_dtype=kv))
    full, fp8 = make("auto"), make("fp8")
    assert fp8.runner.kv_cache.dtype == torch.float8_e4m3fn
    assert fp8.block_manager.num_blocks == 4 * full.block_manager.num_blocks  # 1 byte a value instead of 4
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, logprobs=3)
    a, b = (llm.generate([PROMPT_FOR_FP8], params)[0] for llm in (full, fp8))
    assert a.token_ids[0] == b.token_ids[0]


PROMPT_FOR_FP8 = "The quick brown fox jumps over the lazy dog."


def test_engine_refuses_a_model_known_only_by_its_card():
    from orchestrator.stack_file import parse_stack

    stack = parse_stack("models:\n  - {name: big, kind: llm, path: Qwen/Qwen3-8B}\n")
    with pytest.raises(ValueError, match="only its shipped config"):
        EngineConfig.from_spec(stack.models[0], 1 << 30)


def test_a_step_that_fails_on_one_request_ends_only_that_request(tiny_models):
    """A fault tied to one request (injected in the model runner) fails it; four streams in flight finish as if it
    had never come, token for token."""
    config = lambda: EngineConfig(str(tiny_models["qwen3"]), dtype="float32", num_kv_blocks=128,  # noqa: E731
                                  max_model_len=256)
    params = SamplingParams(temperature=0, max_tokens=160, ignore_eos=True)
    prompts = ["Hello there", "Voice", "A quick brown fox", "Tell me"]
    alone = [o.token_ids for o in LLMEngine(config()).generate(prompts, params)]
    engine = LLMEngine(config())
    run = engine.runner.run

    def faulty(batch):
        if any(seq.request_id == "culprit" for seq in batch.seqs):
            raise RuntimeError("injected fault")
        return run(batch)

    engine.runner.run = faulty
    llm = AsyncLLM(engine)

    async def main():
        async def stream(i):
            return [t async for out in llm.generate(prompts[i], params, request_id=f"r{i}")
                    for t in out.delta_token_ids]

        tasks = [asyncio.create_task(stream(i)) for i in range(4)]
        await asyncio.sleep(0.05)  # the four are mid-answer when the culprit arrives
        with pytest.raises(EngineFailedError, match="injected fault"):
            async for _ in llm.generate("Break", params, request_id="culprit"):
                pass
        assert not any(t.done() for t in tasks)  # the fault came while all four were streaming
        return await asyncio.gather(*tasks)

    try:
        assert asyncio.run(main()) == alone
        assert engine.block_manager.num_used == 0 and not engine.requests
    finally:
        llm.shutdown()
