"""What serving adds: TTFT and inter-token latency through the OpenAI server, with the LLM in the server's process
and in its own worker (as `orchestrator run` starts it), beside the same workload sent straight to `AsyncLLM`,
in one run, at concurrency 1, 8 and 32.

Both servers are `orchestrator run` child processes on the same one-model stack (`isolation: none` and
`process`), with the direct path's engine settings; the client reads the raw SSE stream with httpx2, so
the SDK's own parsing is not counted. The model is the tests' tiny random-weight Qwen3 with a real chat
template, so the engine step is short and the serving layers' share shows. Added = path p50 - direct p50.

With --upstream it measures what our proxy adds instead: the same server as an upstream (a stack with only
that LLM), called directly and through a second `orchestrator run` whose LLM is `url:` that upstream, in one
run. Added = proxy p50 - upstream p50.

    .venv/bin/python bench/serve_latency.py [--requests-per-client 4] [--max-tokens 32] [--upstream]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from hardware import describe  # noqa: E402

from engines.llm import AsyncLLM, EngineConfig, SamplingParams  # noqa: E402
from orchestrator.net import ProcessExited, free_port, wait_healthy  # noqa: E402

MESSAGES = [{"role": "system", "content": "You are a friendly VTuber."},
            {"role": "user", "content": "Tell me about the quick brown fox and the lazy dog."}]


def engine_config(folder: str) -> EngineConfig:
    return EngineConfig(folder, dtype="float32", kv_cache_bytes=KV_BYTES, max_model_len=1024, max_num_seqs=32)


KV_BYTES = 64 * 2**20
PATHS = ("in-process", "worker")


def front_file(upstream: str, port: int, tmp: Path) -> Path:
    """A stack whose one LLM is the upstream server: our routes, auth and proxy, no engine."""
    stack = {"gpu": {"device": "cpu", "memory": "2GiB", "reserve": 0}, "server": {"host": "127.0.0.1", "port": port},
             "models": [{"name": "tiny", "kind": "llm", "url": upstream + "/v1"}]}
    path = tmp / "stack-front.yaml"
    path.write_text(json.dumps(stack))
    return path


def stack_file(folder: str, port: int, isolation: str, tmp: Path) -> Path:
    """One LLM, the direct path's settings; the tolerance is wide since on CPU 'actual' is the whole process."""
    stack = {"gpu": {"device": "cpu", "memory": "2GiB", "reserve": 0, "tolerance": 10},
             "server": {"host": "127.0.0.1", "port": port},
             "models": [{"name": "tiny", "kind": "llm", "path": folder, "dtype": "float32", "max_model_len": 1024,
                         "max_num_seqs": 32, "memory": "512MiB", "isolation": isolation}]}
    path = tmp / f"stack-{isolation}.yaml"
    path.write_text(json.dumps(stack))  # JSON is YAML
    return path


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else float("nan")


async def http_request(client: httpx.AsyncClient, url: str, max_tokens: int) -> tuple[float, list[float]]:
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True}
    start, stamps = time.perf_counter(), []
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                stamps.append(time.perf_counter())
    return stamps[0] - start, [b - a for a, b in zip(stamps, stamps[1:])]


async def direct_request(llm: AsyncLLM, prompt_ids: list[int], max_tokens: int) -> tuple[float, list[float]]:
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    start, stamps = time.perf_counter(), []
    async for out in llm.generate(prompt_ids, params):
        if out.delta_text:
            stamps.append(time.perf_counter())
    return stamps[0] - start, [b - a for a, b in zip(stamps, stamps[1:])]


async def run_level(send, concurrency: int, per_client: int) -> dict:
    ttft, itl = [], []

    async def client_loop() -> None:
        for _ in range(per_client):
            first, gaps = await send()
            ttft.append(first)
            itl.extend(gaps)

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return {"ttft_p50_ms": 1e3 * percentile(ttft, 0.5), "ttft_p95_ms": 1e3 * percentile(ttft, 0.95),
            "itl_p50_ms": 1e3 * percentile(itl, 0.5), "itl_p95_ms": 1e3 * percentile(itl, 0.95)}


async def measure_proxy(urls: dict[str, str], args) -> list[dict]:
    """A server called directly and through another layer (our proxy, Serve's); each client alternates the two (in
    turn starting with either), so both paths meet the same load on a noisy machine."""
    rows = []
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=256)) as client:
        for concurrency in args.concurrency:
            for _ in range(2):
                await asyncio.gather(*(http_request(client, url, 4) for url in urls.values()
                                       for _ in range(concurrency)))
            samples = {name: ([], []) for name in urls}

            async def client_loop(i: int) -> None:
                for j in range(args.requests_per_client):
                    for name in (list(urls) if (i + j) % 2 == 0 else list(urls)[::-1]):
                        first, gaps = await http_request(client, urls[name], args.max_tokens)
                        samples[name][0].append(first)
                        samples[name][1].extend(gaps)

            await asyncio.gather(*(client_loop(i) for i in range(concurrency)))
            row = {"concurrency": concurrency}
            for name, (ttft, itl) in samples.items():
                row[name] = {"ttft_p50_ms": 1e3 * percentile(ttft, 0.5), "ttft_p95_ms": 1e3 * percentile(ttft, 0.95),
                             "itl_p50_ms": 1e3 * percentile(itl, 0.5), "itl_p95_ms": 1e3 * percentile(itl, 0.95)}
            base, via = list(urls)
            row["added_ttft_p50_ms"] = row[via]["ttft_p50_ms"] - row[base]["ttft_p50_ms"]
            row["added_itl_p50_ms"] = row[via]["itl_p50_ms"] - row[base]["itl_p50_ms"]
            rows.append(row)
    return rows


async def measure(folder: str, urls: dict[str, str], args) -> list[dict]:
    llm = AsyncLLM.from_config(engine_config(folder))
    prompt = llm.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    prompt_ids = llm.tokenizer.encode(prompt, add_special_tokens=False)  # as the server renders and encodes
    rows = []
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=128)) as client:
        for concurrency in args.concurrency:
            for _ in range(2):  # warm every path at this width before timing
                await asyncio.gather(*(http_request(client, url, 4) for url in urls.values()
                                       for _ in range(concurrency)),
                                     *(direct_request(llm, prompt_ids, 4) for _ in range(concurrency)))
            row = {"concurrency": concurrency,
                   "direct": await run_level(lambda: direct_request(llm, prompt_ids, args.max_tokens), concurrency,
                                             args.requests_per_client)}
            for name, url in urls.items():
                row[name] = await run_level(lambda url=url: http_request(client, url, args.max_tokens), concurrency,
                                            args.requests_per_client)
                row[f"{name}_added_ttft_p50_ms"] = row[name]["ttft_p50_ms"] - row["direct"]["ttft_p50_ms"]
                row[f"{name}_added_itl_p50_ms"] = row[name]["itl_p50_ms"] - row["direct"]["itl_p50_ms"]
            rows.append(row)
    llm.shutdown()
    return rows


def wait_ready(url: str, child: subprocess.Popen) -> None:
    try:
        wait_healthy(url + "/health", child, 180, poll_s=0.1)  # a Ray deployment takes a while to come up
    except (ProcessExited, TimeoutError) as why:
        raise SystemExit(f"the server was not ready: {why}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    layer = parser.add_mutually_exclusive_group()
    layer.add_argument("--upstream", action="store_true", help="measure our proxy to an upstream server instead")
    layer.add_argument("--ray", action="store_true", help="measure Ray Serve's proxy (1 replica) against the "
                       "single-card server instead")
    parser.add_argument("--out", help="default: bench/results/serve_latency[_upstream|_ray].json")
    args = parser.parse_args()
    suffix = "_upstream" if args.upstream else "_ray" if args.ray else ""
    args.out = args.out or str(ROOT / "bench/results" / f"serve_latency{suffix}.json")
    from orchestrator.demo.tiny_llm import make_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(make_model(Path(tmp) / "qwen3", "qwen3"))
        urls, children = {}, []
        try:
            single = stack_file(folder, port := free_port(), "process", Path(tmp))
            if args.upstream:
                servers = [("upstream", single, port, []),
                           ("proxy", front_file(f"http://127.0.0.1:{port}", free_port(), Path(tmp)), None, [])]
            elif args.ray:
                servers = [("single", single, port, []), ("serve", single, free_port(), ["--ray", "--replicas", "1"])]
            else:
                servers = [(name, stack_file(folder, port := free_port(), isolation, Path(tmp)), port, [])
                           for name, isolation in zip(PATHS, ("none", "process"))]
            for name, stack, port, extra in servers:
                port = port or json.loads(stack.read_text())["server"]["port"]
                children.append(subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(stack),
                                                  "--port", str(port), "--log-level", "WARNING", *extra], cwd=ROOT,
                                                 stdout=subprocess.DEVNULL, start_new_session=True))
                urls[name] = f"http://127.0.0.1:{port}"
                wait_ready(urls[name], children[-1])
            layered = args.upstream or args.ray
            rows = asyncio.run(measure_proxy(urls, args) if layered else measure(folder, urls, args))
        finally:
            for child in children:
                child.terminate()
                child.wait(timeout=30)
    console = Console(width=220)
    console.print(layer_table(rows, *urls) if layered else paths_table(rows))
    result = {"hardware": describe(), "model": "tiny random-weight Qwen3 (orchestrator/demo/tiny_llm.py)",
              "max_tokens": args.max_tokens, "requests_per_client": args.requests_per_client, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.out}")


def paths_table(rows: list[dict]) -> Table:
    table = Table(title="Serving vs direct AsyncLLM (ms; added = path p50 - direct p50)")
    for column in ("concurrency", "direct TTFT p50/p95", "direct ITL p50/p95", *(
            f"{p} {m}" for p in PATHS for m in ("TTFT p50/p95", "ITL p50/p95", "added TTFT", "added ITL"))):
        table.add_column(column, justify="right")
    for r in rows:
        cells = [str(r["concurrency"])]
        for name in ("direct", *PATHS):
            cells += [f"{r[name]['ttft_p50_ms']:.2f} / {r[name]['ttft_p95_ms']:.2f}",
                      f"{r[name]['itl_p50_ms']:.2f} / {r[name]['itl_p95_ms']:.2f}"]
            if name != "direct":
                cells += [f"{r[name + '_added_ttft_p50_ms']:+.2f}", f"{r[name + '_added_itl_p50_ms']:+.2f}"]
        table.add_row(*cells)
    return table


def layer_table(rows: list[dict], base: str, via: str) -> Table:
    table = Table(title=f"Through {via} vs {base} (ms; added = {via} p50 - {base} p50)")
    for column in ("concurrency", f"{base} TTFT p50/p95", f"{base} ITL p50/p95", f"{via} TTFT p50/p95",
                   f"{via} ITL p50/p95", "added TTFT", "added ITL"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(str(r["concurrency"]), *(f"{r[n][m + '_p50_ms']:.2f} / {r[n][m + '_p95_ms']:.2f}"
                                               for n in (base, via) for m in ("ttft", "itl")),
                      f"{r['added_ttft_p50_ms']:+.2f}", f"{r['added_itl_p50_ms']:+.2f}")
    return table


if __name__ == "__main__":
    main()
