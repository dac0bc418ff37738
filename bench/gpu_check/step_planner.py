"""Step 2: the planner's estimate beside what each model really holds after warm-up, part by part.

Every model of the check's stack (and the Piper voice, where it is here) is loaded alone in a process of its own,
as a worker loads it: a snapshot before the engine exists, after `load()`, after the warm-up at the peak shape, and
(the LLM on CUDA) after the decode graphs are captured. On a GPU the parts come from torch's allocator (weights:
allocated after load less the KV pool; activations: the warm-up's peak above that; graphs: the pool the capture
reserved) and NVML's figure for the PID (context: NVML less what torch reserved); runtimes outside torch
(CTranslate2, onnxruntime) give NVML only, so their weights and context are one part. On the CPU the same
snapshots are resident set sizes (/proc): context is the process before loading, weights what loading added,
activations the high-water mark (VmHWM) above that, and the 3% goal is not judged, since RSS of tiny models is
not what it is about.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from bench.gpu_check import ROOT
from bench.gpu_check.common import Context, Outcome, percent_error
from bench.gpu_check.step_models import folders, stack_path

GOAL_PCT = 3.0
PARTS = ("weights", "activations", "context", "graphs", "weights_and_context")


@dataclass(slots=True)
class Snapshot:
    process: int | None  # the whole process on a GPU (None: nothing here can see it); resident set on the CPU
    peak: int        # torch's max allocated on a GPU; VmHWM (peak resident) on the CPU
    allocated: int   # torch's allocated bytes (0 on the CPU, where torch keeps no statistics)
    reserved: int    # torch's reserved bytes (0 on the CPU)
    source: str      # which measurement `process` is (engines.base.MemorySource)


def snapshot(device: str) -> Snapshot:
    import torch

    from engines.base import measure_memory

    usage = measure_memory(device)
    if device.startswith("cuda"):  # before torch touches CUDA (or with a runtime outside it) only NVML has a figure
        reserved = torch.cuda.memory_reserved(device) if torch.cuda.is_initialized() else 0
        return Snapshot(usage.process, usage.peak_allocated, usage.allocated, reserved, usage.source)
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    return Snapshot(usage.process, int(status["VmHWM"].split()[0]) * 1024, 0, 0, usage.source)


def measure(kind: str, entry: dict, device: str, kv_bytes: int) -> dict:
    """In the child: load and warm one engine as a worker does, with a snapshot between the stages."""
    from engines.base import mark_baseline
    from orchestrator.kinds import KINDS
    from orchestrator.stack import SPEC_BY_KIND

    spec = SPEC_BY_KIND[kind].model_validate(entry)
    engine_kind = KINDS[kind]
    cls = engine_kind.engine_class(spec)
    mark_baseline(device)  # where NVML cannot see this PID (a container), the card's use since now is this process's
    before = snapshot(device)
    engine = cls.from_spec(spec, device, kv_bytes) if engine_kind.kv_pool else cls.from_spec(spec, device)
    engine.load()
    loaded = snapshot(device)
    pool = 0
    if engine_kind.kv_pool:  # LLMEngine.warmup's two stages, apart, so the graphs' pool is its own part
        pool = engine.runner.kv_cache.numel() * engine.runner.kv_cache.element_size()
        engine.runner.warmup()
        warm = snapshot(device)
        if engine.runner.device.type == "cuda" and not engine.config.enforce_eager:
            engine.runner.capture_cudagraphs()
        graphed = snapshot(device)
    else:
        engine.warmup()
        warm = graphed = snapshot(device)
    return {"before": asdict(before), "loaded": asdict(loaded), "warm": asdict(warm), "graphed": asdict(graphed),
            "kv_pool_bytes": pool, "torch_allocator": loaded.allocated > 0}


def short(how: str) -> str:
    """A measurement's label as the table's total row shows it."""
    if how.startswith("torch allocator + "):
        return "torch+" + how.removeprefix("torch allocator + ")
    if how.startswith("torch allocator only"):
        return "torch only"
    return how.split(" (")[0] if "outside torch" in how else "RSS"


def parts(raw: dict, cuda: bool) -> tuple[dict, int, str]:
    """Measured bytes per part, the measured total (KV pool excluded) and how they were measured."""
    b, lo, w, g = (Snapshot(**raw[k]) for k in ("before", "loaded", "warm", "graphed"))
    kv = raw["kv_pool_bytes"]
    def minus(a: int | None, b: int | None) -> int | None:  # None: the process figure was not visible
        return None if a is None or b is None else a - b

    if cuda and raw["torch_allocator"]:
        graphs = {"graphs": g.reserved - w.reserved} if kv else {}  # the LLM's decode graphs' pool
        seen = g.process is not None
        return ({"weights": lo.allocated - kv, "activations": w.peak - lo.allocated, **graphs,
                 "context": minus(g.process, g.reserved)},
                (g.process if seen else g.reserved) - kv,
                f"torch allocator + {g.source}" if seen else "torch allocator only (no process figure: context unseen)")
    if cuda:
        return ({"weights_and_context": minus(lo.process, b.process), "activations": minus(w.process, lo.process)},
                w.process, f"{w.source} (runtime outside torch's allocator)")
    return ({"context": b.process, "weights": lo.process - b.process, "activations": w.peak - lo.process},
            w.peak, "resident set (/proc/self/statm, VmHWM); the KV pool is zero pages, not resident until written")


def run(ctx: Context) -> Outcome:
    from budget.estimators import estimate
    from orchestrator.stack import SPEC_BY_KIND
    from orchestrator.stack_file import load_stack

    stack = load_stack(stack_path(ctx))
    # on a GPU the models the stack puts on the card (the LLM, the embedder), and the LLM in int4 too; the smoke
    # run measures every kind (and the Piper voice, where it is here) on the CPU
    entries = [m for m in stack.models if m.kind != "vad" and (ctx.smoke or m.device != "cpu")]
    llm = next(m for m in entries if m.kind == "llm")
    entries.insert(entries.index(llm) + 1, llm.model_copy(update={"name": f"{llm.name}-int4", "quantization": "int4"}))
    piper = folders(ctx).get("piper")
    if piper is not None and ctx.smoke:
        entries.append(SPEC_BY_KIND["tts"](name="piper-voice", kind="tts", path=str(piper)))
    estimates = [estimate(spec, on_gpu=ctx.cuda) for spec in entries]
    # the smallest pool the engine accepts (max_model_len tokens): KV is sized by the planner, not estimated
    pools = [-(-e.max_model_len // e.block_size) * e.block_size * e.kv_bytes_per_token if e.kv_bytes_per_token else 0
             for e in estimates]
    # one at a time on a GPU, so each has the card alone; two at once on the CPU, where RSS is per process anyway
    with ThreadPoolExecutor(1 if ctx.cuda else 2) as pool:
        raws = list(pool.map(lambda a: child(a[0].kind, a[0].model_dump(), ctx.device, a[1]), zip(entries, pools)))
    rows, failures = [], []
    for spec, est, raw in zip(entries, estimates, raws):
        if "error" in raw:  # this model could not be measured; the others still are
            failures.append(f"{spec.name}: {raw['error']}")
            rows.append({"model": spec.name, "kind": spec.kind, "runtime": est.runtime, "error": raw["error"],
                         "estimate_total": est.need_bytes})
            continue
        measured, total, how = parts(raw, ctx.cuda)
        estimated = {"weights": est.weights_bytes, "activations": est.activation_bytes, "context": est.context_bytes,
                     "graphs": est.graph_bytes, "weights_and_context": est.weights_bytes + est.context_bytes}
        error = {p: percent_error(estimated[p], measured[p]) for p in measured}
        total_error = percent_error(est.need_bytes, total)
        within = None if ctx.smoke or total_error is None else abs(total_error) <= GOAL_PCT
        if within is False:
            failures.append(f"{spec.name}: estimate {total_error:+.1f}% off measured (goal ±{GOAL_PCT:g}%)")
        rows.append({"model": spec.name, "kind": spec.kind, "runtime": est.runtime, "measured_by": how,
                     "estimate": {p: estimated[p] for p in measured}, "measured": measured, "error_pct": error,
                     "estimate_total": est.need_bytes, "measured_total": total, "total_error_pct": total_error,
                     "within_goal": within, "kv_pool_bytes": raw["kv_pool_bytes"], "snapshots": raw})
    markdown = table(rows)
    print(markdown)
    done = [r for r in rows if "error" not in r]
    worst = max(done, key=lambda r: abs(r["total_error_pct"] or 0), default=None)
    judged = "goal not judged on CPU (RSS)" if ctx.smoke else \
        f"{sum(bool(r['within_goal']) for r in done)} of {len(rows)} within ±{GOAL_PCT:g}%"
    summary = (f"{len(done)} of {len(rows)} models measured; "
               + (f"worst {worst['model']} {worst['total_error_pct']:+.1f}%; " if worst else "") + judged)
    return Outcome({"goal_pct": GOAL_PCT, "goal_judged": not ctx.smoke, "rows": rows, "markdown": markdown},
                   summary, failures)


def child(kind: str, entry: dict, device: str, kv_bytes: int) -> dict:
    """One model alone in a fresh process (its NVML figure is its own), its snapshots as the last line."""
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check.step_planner", kind, json.dumps(entry), device,
                           str(kv_bytes)], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": f"could not be measured: {proc.stderr.strip()[-1500:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    """One line per model and part: estimate, measured, error."""
    from budget.units import human

    lines = ["| model | part | estimate | measured | error |", "|---|---|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| **{r['model']}** | not measured | {human(r['estimate_total'])} | | {r['error'][:200]} |")
            continue
        for p in (p for p in PARTS if p in r["measured"]):
            m, e = r["measured"][p], r["error_pct"][p]
            lines.append(f"| {r['model']} | {p} | {human(r['estimate'][p])} | "
                         f"{'n/a' if m is None else human(m)} | {'' if e is None else f'{e:+.1f}%'} |")
        how = short(r["measured_by"])
        lines.append(f"| **{r['model']}** | **total** ({how}) | {human(r['estimate_total'])} | "
                     f"{'n/a' if r['measured_total'] is None else human(r['measured_total'])} | "
                     f"**{'n/a' if r['total_error_pct'] is None else format(r['total_error_pct'], '+.1f') + '%'}** |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="measure one model alone (the planner step's child)")
    parser.add_argument("kind")
    parser.add_argument("entry", type=json.loads)
    parser.add_argument("device")
    parser.add_argument("kv_bytes", type=int)
    args = parser.parse_args()
    print(json.dumps(measure(args.kind, args.entry, args.device, args.kv_bytes)))


if __name__ == "__main__":
    main()
