"""Step 2: CUDA-graph decode against eager, compared by their logits within a tolerance (not by tokens: a near tie
may flip a greedy token without anything being wrong).

Two engines on one tiny random-weight Qwen3 in float32, one capturing decode graphs and one eager, decode the same
greedy batches of 1, 3 and 8 prompts; every step's logits are kept. A graph runs at its captured batch size (3 rows
in the graph captured for 4, the padding rows masked), so each row is compared with the same row of the eager step,
up to and including the first step where a greedy token differs. On the CPU no graph is captured, so both engines
are eager and the JSON says so.
"""
from __future__ import annotations

from bench.gpu_check.common import Context, Outcome

BATCHES = (1, 3, 8)
TOKENS = 32
RELATIVE_TOLERANCE = 1e-3   # of the largest |logit| of the step: float32 on both sides, same kernels


def run(ctx: Context) -> Outcome:
    import torch

    from engines.llm import EngineConfig, LLMEngine, SamplingParams
    from orchestrator.demo.tiny_llm import make_model

    folder = ctx.work / "graphs-qwen3"
    if not (folder / "config.json").is_file():
        make_model(folder, "qwen3")
    engines, steps = {}, {}
    for eager in (False, True):
        engine = LLMEngine(EngineConfig(str(folder), dtype="float32", max_model_len=512, max_num_seqs=8,
                                        num_kv_blocks=128, enforce_eager=eager, device=ctx.device))
        model, kept = engine.runner.model, []
        original = model.compute_logits

        def keep(hidden: torch.Tensor, original=original, kept=kept) -> torch.Tensor:
            logits = original(hidden)
            kept.append(logits.float().cpu())
            return logits

        model.compute_logits = keep
        engines[eager], steps[eager] = engine, kept
    captured = sorted(engines[False].runner.graphs)
    greedy = SamplingParams(temperature=0, max_tokens=TOKENS, ignore_eos=True)
    rows = []
    for n in BATCHES:
        prompts = [f"Hello there {i}, how are you today?" for i in range(n)]
        tokens = {}
        for eager, engine in engines.items():
            steps[eager].clear()
            tokens[eager] = [o.token_ids for o in engine.generate(prompts, greedy)]
        rows.append(compare(n, steps[False], steps[True], tokens))
    for engine in engines.values():
        engine.close()
    failures = [f"batch {r['batch']}: {r['problem']}" for r in rows if r["problem"]]
    if ctx.cuda and not captured:
        failures.append("no CUDA graph was captured on CUDA")
    worst = max(r["max_relative_difference"] for r in rows)
    compared = "CUDA graphs vs eager" if captured else "eager vs eager (no graphs on the CPU)"
    summary = (f"{compared}: logits within {worst:.1e} of the largest (tolerance {RELATIVE_TOLERANCE:g}) at batch "
               f"{', '.join(map(str, BATCHES))}; tokens " +
               ("identical" if all(r["first_token_difference"] is None for r in rows) else "differ at a near tie"))
    return Outcome({"graphs_captured": captured, "batches": list(BATCHES), "tokens_per_request": TOKENS,
                    "compared": compared, "tolerance": RELATIVE_TOLERANCE, "rows": rows,
                    **({} if captured else {"why": "CUDA graphs are captured only on CUDA; both engines ran eager"})},
                   summary, failures)


def compare(batch: int, graphs: list, eager: list, tokens: dict) -> dict:
    """Step by step, up to the first greedy token that differs; the largest difference relative to the step's scale."""
    first = next(((i, t) for i, (a, b) in enumerate(zip(tokens[False], tokens[True]))
                  for t, (x, y) in enumerate(zip(a, b)) if x != y), None)
    worst, compared, problem = 0.0, 0, None
    for g, e in zip(graphs, eager):
        if g.shape != e.shape:
            problem = f"step {compared}: logits of shape {tuple(g.shape)} (graphs) vs {tuple(e.shape)} (eager)"
            break
        scale = max(e.abs().max().item(), 1e-6)
        if not bool(g.isfinite().all()):
            problem = f"step {compared}: non-finite logits under graphs"
            break
        worst = max(worst, (g - e).abs().max().item() / scale)
        compared += 1
        if first is not None and bool((g.argmax(-1) != e.argmax(-1)).any()):
            break   # the sequences part here: later steps see different tokens
    if len(graphs) != len(eager) and first is None and problem is None:
        problem = f"{len(graphs)} steps under graphs vs {len(eager)} eager"
    if problem is None and worst > RELATIVE_TOLERANCE:
        problem = f"logits differ by {worst:.2e} of the largest, over the tolerance {RELATIVE_TOLERANCE:g}"
    return {"batch": batch, "steps_compared": compared, "max_relative_difference": worst,
            "first_token_difference": None if first is None else {"request": first[0], "token": first[1]},
            "problem": problem}
