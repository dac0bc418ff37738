"""Prometheus /metrics: per-engine memory (planned beside actual), requests, latency; the LLM's KV and queues.

Request counters and histograms are filled as requests pass; engine and KV figures are read at
scrape time from the supervisor's status and the LLM's latest step stats. One registry per app.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from orchestrator.kinds import KINDS
from orchestrator.status import EngineState

# Which engine kind a route serves, for the per-engine request metrics: each kind's descriptor lists its routes.
ROUTE_KINDS = {route: kind.name for kind in KINDS.values() for route in kind.routes}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.status: Callable[[], list] = list          # the supervisor's EngineStatus list, when there is one
        self.llm_stats: Callable[[], object | None] = lambda: None
        self.requests = Counter("orchestrator_requests", "HTTP requests by engine kind, route and status",
                                ["kind", "route", "status"], registry=self.registry)
        self.errors = Counter("orchestrator_request_errors", "requests answered 4xx/5xx", ["kind", "route", "status"],
                              registry=self.registry)
        self.latency = Histogram("orchestrator_request_seconds", "time to the whole response (streams: to the end)",
                                 ["kind", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.ttft = Histogram("orchestrator_llm_time_to_first_token_seconds", "request start to its first token",
                              buckets=LATENCY_BUCKETS, registry=self.registry)
        self.itl = Histogram("orchestrator_llm_inter_token_seconds", "gap between a request's output steps",
                             buckets=TOKEN_BUCKETS, registry=self.registry)
        self.prompt_tokens = Counter("orchestrator_llm_prompt_tokens", "prompt tokens", registry=self.registry)
        self.cached_tokens = Counter("orchestrator_llm_cached_prompt_tokens", "prompt tokens served from the "
                                     "prefix cache", registry=self.registry)
        self.generation_tokens = Counter("orchestrator_llm_generation_tokens", "generated tokens",
                                         registry=self.registry)
        self.voice_stage = Histogram("orchestrator_voice_stage_seconds", "a realtime voice turn's stages: vad (last "
                                     "voiced sample in to speech_stopped), asr, llm_first_token, first_audio, total",
                                     ["stage"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.voice_responses = Counter("orchestrator_voice_responses", "realtime responses by how they ended",
                                       ["status"], registry=self.registry)
        self.voice_preemptive = Counter("orchestrator_voice_preemptive_answers", "answers started on a pause before "
                                        "the turn ended: used (the pause ended it), cancelled (the user went on), "
                                        "stale (the prompt changed meanwhile)", ["outcome"], registry=self.registry)
        self.voice_pauses_judged = Counter("orchestrator_voice_pauses_judged", "pauses whose words were recognised "
                                           "(and judged, and the answer started when it could be) before the turn "
                                           "ended or went on", registry=self.registry)
        self.asr_batch = Histogram("orchestrator_asr_batch_size", "transcriptions run in one batch, per "
                                   "transcription", ["priority"], buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
                                   registry=self.registry)
        self.asr_wait = Histogram("orchestrator_asr_queue_seconds", "a transcription's wait for the speech-to-text "
                                  "engine (finals go before drafts)", ["priority"], buckets=LATENCY_BUCKETS,
                                  registry=self.registry)
        self.realtime_sessions_opened = Counter("orchestrator_realtime_sessions_opened", "realtime sessions accepted",
                                                registry=self.registry)
        self.realtime_live: Callable[[], tuple[int, int]] = lambda: (0, 0)  # (open sessions, their running tasks)
        self.prompt_total = self.cached_total = 0  # for the hit ratio at scrape time
        self.registry.register(_ScrapeTime(self))

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        kind = ROUTE_KINDS.get(route)
        if kind is None:
            return
        self.requests.labels(kind, route, str(status)).inc()
        self.latency.labels(kind, route).observe(seconds)
        if status >= 400:
            self.errors.labels(kind, route, str(status)).inc()


    def observe_asr(self, result, priority: str) -> None:
        self.asr_batch.labels(priority).observe(result.batch_size)
        self.asr_wait.labels(priority).observe(result.queue_seconds)

    def observe_voice_turn(self, stages_ms: dict[str, float], status: str) -> None:
        self.voice_responses.labels(status).inc()
        for name, ms in stages_ms.items():
            self.voice_stage.labels(name.removesuffix("_ms")).observe(ms / 1000)


class TokenTimer:
    """One LLM request's token timings, fed step by step."""

    __slots__ = ("metrics", "start", "last", "counted")

    def __init__(self, metrics: Metrics) -> None:
        self.metrics, self.start, self.last, self.counted = metrics, time.perf_counter(), None, False

    def step(self, new_tokens: int, prompt_tokens: int, cached_tokens: int) -> None:
        now = time.perf_counter()
        if self.last is None:
            self.metrics.ttft.observe(now - self.start)
        elif new_tokens:
            self.metrics.itl.observe(now - self.last)
        if not self.counted:
            self.metrics.prompt_tokens.inc(prompt_tokens)
            self.metrics.cached_tokens.inc(cached_tokens)
            self.metrics.prompt_total += prompt_tokens
            self.metrics.cached_total += cached_tokens
            self.counted = True
        self.metrics.generation_tokens.inc(new_tokens)
        self.last = now


class _ScrapeTime:
    """Gauges read when Prometheus scrapes: engine memory and state, the LLM's KV blocks and queues."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self):
        planned = GaugeMetricFamily("orchestrator_engine_planned_bytes", "the plan's share", labels=["model", "kind"])
        actual = GaugeMetricFamily("orchestrator_engine_actual_bytes", "measured after warm-up",
                                   labels=["model", "kind"])
        up = GaugeMetricFamily("orchestrator_engine_up", "1 when the engine is ready", labels=["model", "kind"])
        restarts = GaugeMetricFamily("orchestrator_engine_restarts", "worker restarts", labels=["model", "kind"])
        for s in self.metrics.status():
            planned.add_metric([s.name, s.kind], s.planned_bytes)
            if s.actual_bytes is not None:
                actual.add_metric([s.name, s.kind], s.actual_bytes)
            up.add_metric([s.name, s.kind], 1.0 if s.state == EngineState.READY else 0.0)
            restarts.add_metric([s.name, s.kind], s.restarts)
        yield from (planned, actual, up, restarts)
        stats = self.metrics.llm_stats()
        if stats is not None:
            blocks = GaugeMetricFamily("orchestrator_llm_kv_blocks", "KV cache blocks by state", labels=["state"])
            for state in ("used", "free", "cached"):
                blocks.add_metric([state], getattr(stats, f"blocks_{state}"))
            seqs = GaugeMetricFamily("orchestrator_llm_sequences", "sequences by queue", labels=["state"])
            seqs.add_metric(["running"], stats.running)
            seqs.add_metric(["waiting"], stats.waiting)
            yield from (blocks, seqs, GaugeMetricFamily("orchestrator_llm_preemptions", "preemptions since start",
                                                        value=stats.preemptions))
            for name, times, about in (("compile", stats.grammar_compile, "compiling a structured output's grammar"),
                                       ("mask", stats.grammar_mask, "filling a step's grammar token masks (on the "
                                                                    "CPU, beside the forward pass)")):
                yield _histogram(f"orchestrator_llm_grammar_{name}_seconds", about, times)
        sessions, tasks = self.metrics.realtime_live()
        yield GaugeMetricFamily("orchestrator_realtime_sessions", "realtime sessions open now", value=sessions)
        yield GaugeMetricFamily("orchestrator_realtime_tasks", "tasks the open realtime sessions are running",
                                value=tasks)
        prompt = self.metrics.prompt_total
        yield GaugeMetricFamily("orchestrator_llm_prefix_cache_hit_ratio", "cached prompt tokens / prompt tokens",
                                value=self.metrics.cached_total / prompt if prompt else 0.0)


def _histogram(name: str, about: str, times) -> HistogramMetricFamily:
    """An engine-side TimeHistogram (cumulative counts per bound) as a Prometheus histogram."""
    buckets = [(f"{bound:g}", count) for bound, count in zip(times.bounds, times.counts)] + [("+Inf", times.count)]
    return HistogramMetricFamily(name, about, buckets=buckets, sum_value=times.total)


class RequestMetricsMiddleware:
    """Counts every response and times it to its last byte, streams included (plain ASGI, so nothing buffers).

    Every response also carries `Server-Timing: app;dur=MS`, the server's own time to its first byte."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def timed_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                took = f"app;dur={(time.perf_counter() - start) * 1000:.1f}".encode()
                message = {**message, "headers": [*message.get("headers", []), (b"server-timing", took)]}
            await send(message)

        if scope["path"] not in ROUTE_KINDS:
            return await self.app(scope, receive, timed_send)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.metrics.observe_request(scope["path"], status, time.perf_counter() - start)
