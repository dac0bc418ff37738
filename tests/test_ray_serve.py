"""`orchestrator run --ray --replicas 2`: a local Ray cluster on 127.0.0.1, two whole tiny stacks behind Serve's proxy.

The cluster is started by `orchestrator run` itself (no address) and stopped with it. Replicas are told apart by
the `x-replica` header each one sets and by their own /metrics; /health/engines lists every replica.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest
from needs import needs_module

from orchestrator.net import free_port

needs_module("ray.serve", "Ray Serve is the optional extra .[ray]; scripts/setup.sh installs it")

ROOT = Path(__file__).resolve().parents[1]
KEY = "ray-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def tiny_stack(tmp_path: Path, model: Path, memory: str = "2GiB") -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps({
        "gpu": {"device": "cpu", "memory": memory, "reserve": 0, "tolerance": 10},
        "models": [{"name": "tiny", "kind": "llm", "path": str(model), "dtype": "float32", "max_model_len": 1024,
                    "memory": "512MiB", "isolation": "none"}]}))
    return path


def replicas(url: str) -> list[dict]:
    reply = httpx.get(url + "/health/engines", headers=HEADERS, timeout=30)
    return reply.json().get("replicas", []) if reply.status_code == 200 else []


@pytest.fixture(scope="module")
def cluster(tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray")
    port, log = free_port(), tmp / "run.log"
    with open(log, "wb") as out:
        stack = tiny_stack(tmp, tiny_models["qwen3"])
        argv = [sys.executable, "-m", "orchestrator.cli", "run", str(stack), "--ray", "--replicas", "2", "--port",
                str(port), "--api-key", KEY, "--log-level", "WARNING"]
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if len(replicas(url)) == 2:
                break
        except httpx.TransportError:
            pass
        time.sleep(1)
    else:
        proc.kill()
        pytest.fail(f"the Ray deployment did not come up:\n{log.read_text()[-4000:]}")
    yield url, proc
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def per_replica_metrics(url: str, name: str, replicas_expected: int = 2, within_s: float = 60) -> dict[str, float]:
    """A counter's value on each replica: /metrics through the entry until every replica has answered.

    The registry forgets a replica it has not heard from for FORGET_AFTER_S; on a loaded 2-core machine a busy
    replica's report can be that late, so the live set is read again until it holds every replica.
    """
    seen: dict[str, float] = {}
    live: set[str] = set()
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        live = {r["id"] for r in replicas(url)}
        reply = httpx.get(url + "/metrics", timeout=30)
        seen[reply.headers["x-replica"]] = sum(float(line.split()[-1]) for line in reply.text.splitlines()
                                               if line.startswith(name))
        if len(live) >= replicas_expected and live <= set(seen):
            break
        time.sleep(0.1)  # the router favours the replica with fewer requests in flight: let a busy one settle
    return {k: v for k, v in seen.items() if k in live}


def chat(url: str) -> tuple[int, str | None]:
    reply = httpx.post(url + "/v1/chat/completions", headers=HEADERS, json=CHAT, timeout=120)
    return reply.status_code, reply.headers.get("x-replica")


def test_concurrent_chats_spread_over_both_replicas(cluster):
    """Waves of 20 chats at once until both replicas have served some (at most five waves).

    Serve's router probes each replica's queue with a short deadline; on a loaded 2-core machine one replica can
    miss it for a whole wave, and the router then rightly sends that wave to the other.
    """
    url, _ = cluster
    metric = 'orchestrator_requests_total{kind="llm",route="/v1/chat/completions"'
    before = per_replica_metrics(url, metric)
    results: list[tuple[int, str | None]] = []
    for _ in range(5):
        with ThreadPoolExecutor(20) as pool:
            results += pool.map(lambda _: chat(url), range(20))
        if len({replica for _, replica in results}) == 2:
            break
    assert {code for code, _ in results} == {200}
    served = {r: n - before.get(r, 0) for r, n in per_replica_metrics(url, metric).items()}
    assert len(served) == 2 and all(n > 0 for n in served.values()), served
    assert sum(served.values()) == len(results)
    assert {replica for _, replica in results} == set(served)


def test_chats_with_a_session_key_stay_on_the_replica_that_holds_it(cluster):
    """Serve's multiplexed routing on the session header: each key's chats land on one replica, under load."""
    url, _ = cluster

    def keyed(key: str) -> str:
        headers = {**HEADERS, "serve_multiplexed_model_id": key}
        reply = httpx.post(url + "/v1/chat/completions", headers=headers, json=CHAT, timeout=120)
        assert reply.status_code == 200
        return reply.headers["x-replica"]

    for key in ("alice", "bob", "carol", "dave"):
        keyed(key)  # the first request places the key
    with ThreadPoolExecutor(20) as pool:
        placed = list(pool.map(lambda i: (i % 4, keyed(("alice", "bob", "carol", "dave")[i % 4])), range(40)))
    by_key = {k: {r for i, r in placed if i == k} for k in range(4)}
    assert all(len(replicas_of_key) == 1 for replicas_of_key in by_key.values()), by_key


def test_a_realtime_session_stays_on_one_replica(cluster):
    from realtime_client import Client

    url, _ = cluster
    before = per_replica_metrics(url, "orchestrator_realtime_sessions_opened_total")

    async def session():
        client = await Client.connect(url, KEY, "tiny")
        await client.until("session.created")
        await client.send(type="session.update", session={"output_modalities": ["text"], "max_output_tokens": 4})
        for _ in range(3):
            await client.send(type="conversation.item.create", item={
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello!"}]})
            await client.send(type="response.create")
            await client.until("response.done")
        await client.close()

    asyncio.run(asyncio.wait_for(session(), 120))
    after = per_replica_metrics(url, "orchestrator_realtime_sessions_opened_total")
    grew = {r: after[r] - before.get(r, 0) for r in after}
    assert sorted(grew.values()) == [0, 1], grew  # the one session opened on one replica, its turns served there
    answered = per_replica_metrics(url, "orchestrator_voice_responses_total")
    assert answered[max(grew, key=grew.get)] >= 3


def test_the_entry_checks_the_key_for_http_and_websocket(cluster):
    import websockets

    url, _ = cluster
    assert httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=30).status_code == 401

    async def handshake():
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url.replace("http", "ws") + "/v1/realtime")
        return refused.value.response.status_code

    assert asyncio.run(handshake()) == 401


def test_a_killed_replica_is_replaced_while_the_other_serves(cluster):
    url, _ = cluster
    victim = replicas(url)[0]
    os.kill(victim["pid"], signal.SIGKILL)
    codes = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        codes.append(chat(url)[0])
        now = {r["id"] for r in replicas(url)}
        if len(now) == 2 and victim["id"] not in now:
            break
        time.sleep(0.5)
    assert len(now) == 2 and victim["id"] not in now, now  # Serve brought the count back to 2
    assert codes and set(codes) == {200}, codes             # and every request meanwhile was served


@pytest.mark.parametrize("args, code, says", [
    (["--ray", "--replicas", "0"], 2, "at least 1 replica"),
    (["--replicas", "2"], 2, "needs --ray"),
    (["--ray", "127.0.0.1:1", "--replicas", "1"], 2, "cannot reach the Ray cluster"),
])
def test_bad_ray_options_are_clear_errors(tiny_models, tmp_path, run_cli, args, code, says):
    result = run_cli("run", str(tiny_stack(tmp_path, tiny_models["qwen3"])), "--port", str(free_port()), *args)
    assert result.returncode == code and says in result.stderr and "Traceback" not in result.stderr, \
        result.stderr[-3000:]


def test_a_stack_that_does_not_fit_one_card_is_refused_before_deploying(tiny_models, tmp_path, run_cli):
    result = run_cli("run", str(tiny_stack(tmp_path, tiny_models["qwen3"], memory="256MiB")), "--ray",
                     "--replicas", "2", "--port", str(free_port()))
    assert result.returncode == 1 and "refusing to start" in result.stderr and "ray" not in result.stdout.lower()
