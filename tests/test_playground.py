"""The browser playground (GET /) in Debian's Chromium, driven by Playwright, against the real demo stack: a spoken
question from a fake microphone (espeak-ng's speech, real Whisper, SmolLM2 and Piper), a typed turn, talking over the
answer, the key prompt, and the card through a worker's death. No browser is downloaded: Playwright drives
/usr/bin/chromium. About 45 s on 2 cores, 20 of them starting the stack."""
from __future__ import annotations

import logging
import os
import signal
import wave
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest
from live_stack import live_stack
from needs import missing, needs_module
from speech import silence, speak, word_errors

from orchestrator.server.app import build_app
from orchestrator.server.routers.playground import ASSETS
from tests.conftest import CONFIGS, ROOT

CHROMIUM = Path("/usr/bin/chromium")

log = logging.getLogger(__name__)
KEY = "playground-key"
QUESTION = "What is the capital of Italy?"
ARTIFACTS = ROOT / "tests" / "artifacts"
STAGES = {"vad", "asr", "llm_first_token", "first_audio"}
TURN_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def stack(real_models):
    """The demo stack as `orchestrator run` starts it (workers; VAD in the server), behind a key."""
    with live_stack(CONFIGS / "demo.yaml", KEY, isolation=None) as (_, supervisor, url):
        yield url, supervisor


def microphone_file(path: Path, *parts: str | float) -> Path:
    """A wav for Chromium's fake microphone: each part spoken (a str) or silent (seconds); played once, then silence."""
    rate = 16000
    audio = np.concatenate([silence(part, rate) if isinstance(part, float) else speak(part, rate) for part in parts])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def playwright():
    """Playwright's driver (no browser of its own: it drives Debian's); the browser tests skip without either."""
    if not CHROMIUM.exists():
        missing("Debian's chromium is not installed (scripts/setup.sh installs it: apt-get install chromium)")
    sync_api = needs_module("playwright.sync_api", "the `test` extra; scripts/setup.sh installs it")
    with sync_api.sync_playwright() as driver:
        yield driver


def launch(playwright, microphone: Path):
    """Debian's Chromium, headless, with `microphone` as the microphone every page gets (no permission prompt)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}%noloop"])


@pytest.fixture(scope="module")
def browser(playwright, tmp_path_factory):
    chromium = launch(playwright, microphone_file(tmp_path_factory.mktemp("mic") / "question.wav", 0.5, QUESTION, 2.0))
    yield chromium
    chromium.close()


def open_page(browser, url: str, key: str | None = KEY):
    """A fresh browser context (its own storage) on the playground, with the key already given once when `key`."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.on("console", lambda m: log.info("browser %s: %s", m.type, m.text))
    page.on("response", lambda r: r.status >= 400 and log.info("browser got %d for %s", r.status, r.url))
    page.raised = []
    page.on("pageerror", lambda error: page.raised.append(str(error)))
    page.goto(url + "/")
    if key:
        page.fill("#key-input", key)
        page.click("#key-form button[type=submit]")
    return page


def close(page) -> None:
    """Close the page's context; whatever its scripts raised fails the test."""
    page.context.close()
    assert not page.raised, f"the page raised: {page.raised}"


def screenshot(page, name: str) -> None:
    """The whole page as a test artifact (tests/artifacts/, not committed), for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / name, full_page=True)


def state(page) -> dict:
    return page.evaluate("() => window.playground.state")


def texts(page, role: str) -> list[str]:
    return page.locator(f'#transcript li[data-role="{role}"] .text').all_inner_texts()


def test_a_spoken_question_is_heard_answered_and_played(browser, stack):
    url, _ = stack
    page = open_page(browser, url)
    page.click(".settings summary")
    page.fill("#temperature", "0")  # greedy: the demo's seeded SmolLM2 then knows this one
    page.click("#mic")
    page.wait_for_function("() => { const s = window.playground.state; return s.turns >= 1 && "
                           "s.audioChunksReceived > 0 && s.audioChunksPlayed === s.audioChunksReceived; }",
                           timeout=TURN_TIMEOUT_MS)
    (heard,), (answer,) = texts(page, "user"), texts(page, "assistant")
    log.info("heard %r, answered %r", heard, answer)
    errors, _ = word_errors(QUESTION, heard)
    assert errors <= 1, f"Whisper heard {heard!r} for {QUESTION!r}"
    assert "rome" in answer.lower(), answer
    seen = state(page)
    assert seen["piecesSent"] >= 20 and seen["errors"] == [], seen  # 100 ms pieces, at least the question's length
    assert set(seen["lastLatency"]) >= {f"{s}_ms" for s in STAGES}
    shown = page.locator("#latency li:first-child .stage").evaluate_all("spans => spans.map(s => s.dataset.stage)")
    assert set(shown) == STAGES
    page.wait_for_selector("#models tbody tr")
    screenshot(page, "playground.png")
    page.click("#mic")  # off, and on again: the same context opens the microphone once more
    page.click("#mic")
    page.wait_for_selector('#mic[aria-pressed="true"]')
    close(page)


def test_a_typed_message_is_answered_in_text_and_audio(browser, stack):
    url, _ = stack
    page = open_page(browser, url)
    page.click(".settings summary")
    page.fill("#temperature", "0")  # greedy: sampled, the 135M model may talk for minutes before it stops
    page.fill("#type-input", "Say hello to me.")
    page.press("#type-input", "Enter")
    page.wait_for_function("() => window.playground.state.turns >= 1 && "
                           "window.playground.state.audioChunksPlayed > 0", timeout=TURN_TIMEOUT_MS)
    assert texts(page, "user") == ["Say hello to me."]
    (answer,) = texts(page, "assistant")
    assert answer.strip()
    shown = page.locator("#latency li:first-child .stage").evaluate_all("spans => spans.map(s => s.dataset.stage)")
    assert set(shown) == {"llm_first_token", "first_audio"}  # nothing was heard or transcribed
    close(page)


def test_talking_over_the_answer_stops_it_and_cuts_it_where_it_was_heard(playwright, stack, tmp_path):
    url, _ = stack
    chromium = launch(playwright, microphone_file(tmp_path / "interrupt.wav", 0.5, "Tell me a long story about the sea.",
                                                  4.5, "Stop, stop please.", 2.0))
    try:
        page = open_page(chromium, url)
        page.click(".settings summary")
        page.fill("#instructions", "You tell long, detailed stories of many sentences.")
        page.fill("#temperature", "0")
        page.click("#mic")
        page.wait_for_function("() => window.playground.state.events['conversation.item.retrieved'] >= 1",
                               timeout=TURN_TIMEOUT_MS)  # cut, then read back as the model will remember it
        seen = state(page)
        (cut,) = seen["truncations"]
        heard_s = cut["audioEndMs"] / 1000
        log.info("cut after %.2f s heard; %d of %d pieces played", heard_s, seen["audioChunksPlayed"],
                 seen["audioChunksReceived"])
        assert 0 < heard_s < seen["audioSecondsReceived"] - 1, seen  # cut in the middle...
        assert seen["audioChunksPlayed"] < seen["audioChunksReceived"]  # ...and the rest silenced, not played
        item = cut["itemId"]
        note = page.locator(f'#transcript li[data-item="{item}"] .note').inner_text()
        assert note == f"interrupted after {heard_s:.1f} s"
        bubble = page.locator(f'#transcript li[data-item="{item}"] .text')
        unheard = bubble.locator(".unheard").inner_text()
        assert unheard.strip() and bubble.inner_text().removesuffix(unheard).strip(), bubble.inner_text()
        screenshot(page, "playground-interrupted.png")
        close(page)
    finally:
        chromium.close()


def test_without_the_key_the_page_asks_for_it_and_names_a_wrong_one(browser, stack):
    url, _ = stack
    page = open_page(browser, url, key=None)
    page.wait_for_selector("#key-form", state="visible")
    assert "needs an API key" in page.inner_text("#key-form h2")
    assert page.is_hidden("#main") and page.is_hidden("#key-error")
    page.fill("#key-input", "not-the-key")
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#key-error", state="visible")
    assert "Wrong API key" in page.inner_text("#key-error")
    page.fill("#key-input", KEY)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#main", state="visible")
    page.reload()  # asked once: the key is kept
    page.wait_for_selector("#main", state="visible")
    close(page)


def test_the_card_shows_every_model_and_a_killed_one_restarting_then_ready(browser, stack):
    url, supervisor = stack
    page = open_page(browser, url)
    page.wait_for_selector("#models tbody tr")
    rows = {row.get_attribute("data-model"): row for row in page.locator("#models tbody tr").all()}
    assert set(rows) == {"smollm2", "whisper-base", "voice", "minilm", "vad"}
    for name, row in rows.items():
        status = supervisor.status[name]
        assert row.locator('[data-field="share"]').inner_text().endswith(("MiB", "GiB")), name
        actual = row.locator('[data-field="actual"]').inner_text()
        if status.actual_bytes is None:
            assert actual == "in server", name
        else:
            assert actual.endswith(("MiB", "GiB")), name
        assert row.locator('[data-field="state"]').inner_text() == "ready"
    assert page.locator("#plan-bar .segment").count() >= 6  # each model's parts, the reserve, the unassigned rest
    assert page.locator("#actual-bar .segment").count() == 4  # the four workers; VAD is in the server
    os.kill(supervisor.status["minilm"].pid, signal.SIGKILL)
    minilm = '#models tr[data-model="minilm"] [data-field="state"]'
    page.wait_for_function(f"() => document.querySelector('{minilm}').textContent === 'restarting'", timeout=30_000)
    page.wait_for_function(f"() => document.querySelector('{minilm}').textContent === 'ready'", timeout=120_000)
    assert page.locator('#models tr[data-model="minilm"] td').last.inner_text() == "1"  # one restart
    close(page)


def test_the_page_is_the_servers_own_files_and_the_plan_is_behind_the_key(stack):
    url, supervisor = stack
    for path in ("/", "/playground"):
        page = httpx.get(url + path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/playground/playground.js">' in page.text
    for name in ASSETS:  # nothing fetched from elsewhere: it works offline
        served = httpx.get(f"{url}/playground/{name}")
        assert served.status_code == 200 and "http://" not in served.text and "https://" not in served.text, name
    missing = httpx.get(url + "/playground/app.py")
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "the playground has no file 'app.py'"
    assert httpx.get(url + "/health/plan").status_code == 401
    body = httpx.get(url + "/health/plan", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert [m["name"] for m in body["plan"]["models"]] == list(supervisor.status)
    assert sum(s["gib"] for s in body["bar"]) == pytest.approx(body["plan"]["total_bytes"] / 2**30)  # the whole card
    assert [p["part"] for p in body["parts"]] == ["weights", "activations", "context + graphs", "KV cache", "margin"]


def test_a_server_without_a_plan_says_where_the_shares_are():
    from fastapi.testclient import TestClient

    answer = TestClient(build_app(None)).get("/health/plan")
    assert answer.status_code == 404 and "/health/engines" in answer.json()["error"]["message"]
