"""The web console in a real browser: Debian's chromium driven by Playwright (never a downloaded
browser), in front of a real bridge, engine and nats-server; the microphone is chromium's fake
capture device fed from a wav. Screenshots: test-artifacts/console/ in the repository root.

The TTS, cloning and async-job tests need the TTS endpoints: each skips, with the reason, only
while the bridge answers 404 on the endpoint it needs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np
import pytest
import soundfile as sf
import soxr
from playwright.async_api import Browser, Page, Request, WebSocket, async_playwright, expect

from tests.conftest import DATA, ROOT, BridgeProcess, EngineProcess, running_nats, wait_engines
from tests.cosyvoice_double import engine_env, model_tree
from tests.harness import nls_order_errors
from tests.textmetrics import wer

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "console"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
TOKEN = "console-test-token-0123"
CLIPS = {c["file"]: c for c in json.loads((DATA / "clips.json").read_text())}
FOX_TEXT = CLIPS["en_fox.wav"]["text"]  # "The quick brown fox jumps over the lazy dog ..."
FOX = re.compile(r"\bfox\b.*\blazy\b", re.I)  # the recognised fox sentence is on the page
MAX_WER = 0.25  # as the ASR tests: the page shows what the engine recognised
TTS_TEXT = (
    "The console plays this while it is still being synthesised. Here is a second sentence. "
    "And a third one, so that the stream takes a while. The fourth sentence ends it."
)


# ------------------------------------------------------------------ browser and pages


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """en_fox.wav as chromium's fake capture device plays it (looped): 48 kHz 16-bit PCM with
    1.5 s of silence before and after, so each loop is a sentence of its own."""
    audio, rate = sf.read(DATA / "en_fox.wav", dtype="float32")
    silence = np.zeros(int(48000 * 1.5), dtype=np.float32)
    path = tmp_path_factory.mktemp("mic") / "fox-48k.wav"
    sf.write(path, np.concatenate([silence, soxr.resample(audio, rate, 48000), silence]), 48000,
             subtype="PCM_16")  # fmt: skip
    return path


@pytest.fixture(scope="session")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no chromium at {CHROMIUM}: install Debian's (apt-get install -y chromium) "
            "or set CHROMIUM to its path"
        )
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str, mic_wav: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        flags = [*FLAGS, f"--use-file-for-fake-audio-capture={mic_wav}"]
        browser = await pw.chromium.launch(executable_path=chromium, args=flags)
        try:
            yield browser
        finally:
            await browser.close()


class Watch:
    """What a page did: its requests, WebSockets (with frames), errors."""

    def __init__(self, page: Page) -> None:
        self.requests: list[Request] = []
        self.sockets: list[WebSocket] = []
        self.frames: list[tuple[str, str | bytes]] = []  # ("out"|"in", payload)
        self.errors: list[str] = []
        page.on("request", lambda req: self.requests.append(req))
        page.on("websocket", self._socket)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None,
        )

    def _socket(self, ws: WebSocket) -> None:
        self.sockets.append(ws)
        ws.on("framesent", lambda data: self.frames.append(("out", data)))
        ws.on("framereceived", lambda data: self.frames.append(("in", data)))

    def text_frames(self, direction: str) -> list[dict[str, Any]]:
        return [json.loads(p) for d, p in self.frames if d == direction and isinstance(p, str)]

    def binary_frames(self, direction: str) -> list[bytes]:
        return [p for d, p in self.frames if d == direction and isinstance(p, bytes)]


Opener = Callable[..., Awaitable[tuple[Page, Watch]]]


@pytest.fixture
async def open_console(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Opener]:
    """open_console(bridge_url, "#tab") -> (page, watch); a screenshot of each page at the end."""
    pages: list[Page] = []

    async def opener(url: str, where: str = "/console/") -> tuple[Page, Watch]:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        watch = Watch(page)
        pages.append(page)
        await page.goto(url + where)
        await expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
        return page, watch

    yield opener
    for i, page in enumerate(pages):
        suffix = f"-{i + 1}" if len(pages) > 1 else ""
        await shot(page, f"{request.node.name}-end{suffix}")
        await page.context.close()


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    await page.screenshot(path=str(ARTIFACTS / f"{safe}.png"), full_page=True)


def origin(url: str) -> str:
    """host:port of a URL; a blob: URL (audio the page assembled) has its page's origin."""
    parts = urlsplit(url.removeprefix("blob:"))
    return f"{parts.hostname}:{parts.port}"


def elsewhere(requests: list[Request], url: str) -> list[str]:
    """The requests that did not go to the bridge at `url` (data: URLs never leave the page)."""
    here = origin(url)
    return [r.url for r in requests if not r.url.startswith("data:") and origin(r.url) != here]


async def http(method: str, url: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.request(method, url, allow_redirects=False,
                                                       **kw) as r:  # fmt: skip
        return r.status, dict(r.headers), await r.read()


# ------------------------------------------------------------------ the page itself


async def test_served_locally_accessible_no_external_requests(
    bridge: BridgeProcess, open_console: Opener
) -> None:
    # `/`: a browser is sent to the console, API clients keep the JSON description
    status, headers, _ = await http("GET", f"{bridge.url}/", headers={"Accept": "text/html"})
    assert status == 302 and headers["Location"] == "console/"
    status, _, body = await http("GET", f"{bridge.url}/")
    assert status == 200 and json.loads(body)["message"] == "FunSpeech API Server"
    status, headers, _ = await http("GET", f"{bridge.url}/console")
    assert status == 302 and headers["Location"] == "console/"
    status, headers, _ = await http("GET", f"{bridge.url}/console/")
    assert status == 200 and "default-src 'self'" in headers["Content-Security-Policy"]
    status, _, _ = await http("GET", f"{bridge.url}/console/..%2f..%2fapp.py")
    assert status == 404

    page, watch = await open_console(bridge.url, "/")  # through the redirect
    assert urlsplit(page.url).path == "/console/"
    await expect(page).to_have_title("FunSpeech console")

    # every panel, by keyboard: arrows move along the tabs (WAI-ARIA tabs pattern)
    tabs = page.get_by_role("tab")
    names = [await t.inner_text() for t in await tabs.all()]
    assert names == ["Live ASR", "File ASR", "Text to speech", "Voices", "Async jobs", "Status"]
    await tabs.first.focus()
    for i, name in enumerate(names):
        tab = page.get_by_role("tab", name=name)
        await expect(tab).to_be_focused()
        await expect(tab).to_have_attribute("aria-selected", "true")
        await expect(page.get_by_role("tabpanel")).to_have_count(1)  # the others are hidden
        await expect(page.locator(f"#{await tab.get_attribute('aria-controls')}")).to_be_visible()
        await shot(page, f"panel-{i + 1}-{name}")
        await page.keyboard.press("ArrowRight")
    await expect(page.get_by_role("tab", name="Live ASR")).to_be_focused()  # wraps around

    # the status panel has loaded what it shows
    await page.get_by_role("tab", name="Status").click()
    await expect(page.locator("#status-tasks table").first).to_be_visible(timeout=15_000)

    # every form control has a label
    unlabelled = await page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, meter, progress')]
              .filter(e => e.type !== 'hidden')
              .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
              .map(e => e.id || e.outerHTML)"""
    )
    assert unlabelled == []

    # nothing but this bridge: no CDN, no font or analytics host, nothing
    assert watch.requests, "the page made no requests?"
    assert elsewhere(watch.requests, bridge.url) == []
    assert all(origin(ws.url) == origin(bridge.url) for ws in watch.sockets)
    assert watch.errors == []


async def test_status_lists_live_engine(bridge: BridgeProcess, open_console: Opener) -> None:
    _, _, body = await http("GET", f"{bridge.url}/stream/v1/asr/health")
    engines = json.loads(body)["engines"]
    assert engines
    page, watch = await open_console(bridge.url, "/console/#status")
    for engine in engines:
        row = page.locator(f'#status-tasks tr[data-engine="{engine["id"]}"]')
        await expect(row).to_be_visible(timeout=15_000)
        await expect(row).to_contain_text(engine["backend"])
        await expect(row).to_contain_text(engine["device"])
        await expect(row).to_contain_text(f"/ {engine['capacity']}")
        for model in engine["models"]:
            await expect(row).to_contain_text(model)
    await expect(page.locator("#status-bridge")).to_contain_text("connected")
    await expect(page.locator("#status-error")).to_be_hidden()
    await shot(page, "status")
    assert watch.errors == []


@pytest.mark.parametrize(
    ("env", "console"),
    [({"CONSOLE_REDIRECT_ROOT": "false"}, 200), ({"CONSOLE_ENABLED": "false"}, 404)],
    ids=["no-redirect", "disabled"],
)
async def test_settings(
    nats_url: str, light_engine: object, tmp_path: Path, env: dict[str, str], console: int
) -> None:
    """Either setting off: a browser's GET / gets the JSON description like any client."""
    proc = BridgeProcess(nats_url, tmp_path, **env).start()
    try:
        status, _, _ = await http("GET", f"{proc.url}/console/")
        assert status == console
        status, headers, body = await http("GET", f"{proc.url}/", headers={"Accept": "text/html"})
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        assert json.loads(body)["message"] == "FunSpeech API Server"
    finally:
        proc.stop()


# ------------------------------------------------------------------ ASR


async def run_live(page: Page) -> None:
    """Start on the live panel; the model list must have loaded first."""
    await page.get_by_role("tab", name="Live ASR").click()
    await expect(page.locator("#live-model option")).not_to_have_count(1, timeout=15_000)
    await page.get_by_role("button", name="Start").click()


async def test_live_asr_from_the_microphone(bridge: BridgeProcess, open_console: Opener) -> None:
    page, watch = await open_console(bridge.url)
    await run_live(page)
    await expect(page.locator("#live-state")).to_contain_text("Listening", timeout=30_000)
    sentences = page.locator("#live-sentences li")
    await expect(sentences.first).to_contain_text(FOX, timeout=120_000)
    await expect(sentences.first.locator(".time")).to_have_text(
        re.compile(r"\d:\d\d\.\d–\d:\d\d\.\d")
    )
    await shot(page, "live-asr-recognised")
    await page.get_by_role("button", name="Stop").click()
    await expect(page.locator("#live-state")).to_contain_text("Completed", timeout=60_000)
    await expect(page.get_by_role("button", name="Start")).to_be_enabled()

    # on the wire: what any NLS client sends
    (ws,) = watch.sockets
    assert urlsplit(ws.url).path == "/ws/v1" and origin(ws.url) == origin(bridge.url)
    sent = watch.text_frames("out")
    assert [f["header"]["name"] for f in sent] == ["StartTranscription", "StopTranscription"]
    start = sent[0]
    assert start["header"]["namespace"] == "SpeechTranscriber"
    assert re.fullmatch(r"[0-9a-f]{32}", start["header"]["task_id"])
    assert sent[1]["header"]["task_id"] == start["header"]["task_id"]
    payload = start["payload"]
    assert (payload["format"], payload["sample_rate"]) == ("pcm", 16000)
    assert payload["enable_intermediate_result"] is True
    assert payload["enable_punctuation_prediction"] is True
    assert payload["enable_inverse_text_normalization"] is True
    assert payload["max_sentence_silence"] == 800
    audio = watch.binary_frames("out")
    assert len(audio) > 10
    assert all(len(f) == 3200 for f in audio[:-1])  # 100 ms of 16 kHz s16le per frame
    assert 0 < len(audio[-1]) <= 3200 and len(audio[-1]) % 2 == 0  # the flushed tail
    events = watch.text_frames("in")
    names = [e["header"]["name"] for e in events]
    assert nls_order_errors(names) == [], names
    # every partial result was shown as it came (the engine may send none under load)
    partials = names.count("TranscriptionResultChanged")
    assert await page.locator("#live-partial").get_attribute("data-updates") == (
        str(partials) if partials else None
    )
    ends = [e["payload"] for e in events if e["header"]["name"] == "SentenceEnd"]
    first = next(e for e in ends if FOX.search(e["result"]))
    assert wer(FOX_TEXT, first["result"]) <= MAX_WER, first
    assert first["result"] in " ".join(await sentences.all_inner_texts())  # shown as it came
    # the times are those of 16 kHz audio: the clip's speech starts after the 1.5 s of silence
    # and lasts about 3.5 s (audio at a wrong rate would stretch it)
    assert 500 <= first["begin_time"] <= 4000, first
    assert 2000 <= first["time"] - first["begin_time"] <= 6000, first
    assert watch.errors == []


async def test_file_transcription(
    bridge: BridgeProcess, open_console: Opener, tmp_path: Path
) -> None:
    page, watch = await open_console(bridge.url, "/console/#file")
    panel = page.locator("#panel-file")
    # NLS one-shot: sentences with times, the JSON as answered
    await page.get_by_label("Audio file").set_input_files(DATA / "en_two_sentences.wav")
    await page.get_by_role("button", name="Transcribe").click()
    rows = panel.locator("#file-segments tbody tr")
    await expect(rows).to_have_count(2, timeout=90_000)
    await expect(rows.nth(0)).to_contain_text(re.compile(r"\bmorning\b", re.I))
    await expect(rows.nth(1)).to_contain_text(re.compile(r"\breport\b", re.I))
    two = CLIPS["en_two_sentences.wav"]["text"]
    assert wer(two, await panel.locator("#file-text").inner_text()) <= MAX_WER
    await expect(panel.locator("#file-json")).to_contain_text('"status": 20000000')
    await shot(page, "file-asr-nls")
    # OpenAI verbose_json
    await page.get_by_label("OpenAI").check()
    await page.get_by_label("Audio file").set_input_files(DATA / "en_fox.wav")
    await page.get_by_role("button", name="Transcribe").click()
    await expect(panel.locator("#file-text")).to_contain_text(FOX, timeout=90_000)
    assert wer(FOX_TEXT, await panel.locator("#file-text").inner_text()) <= MAX_WER
    await expect(panel.locator("#file-json")).to_contain_text('"segments"')
    await expect(rows.first).to_contain_text(FOX)
    await shot(page, "file-asr-openai")
    # the service's error, as it says it
    junk = tmp_path / "notes.wav"
    junk.write_bytes(b"RIFF this is not audio at all" * 10)
    await page.get_by_label("NLS").check()
    await page.get_by_label("Audio file").set_input_files(junk)
    await page.get_by_role("button", name="Transcribe").click()
    error = panel.get_by_role("alert")
    await expect(error).to_contain_text("HTTP 400 · 40000002", timeout=60_000)
    await shot(page, "file-asr-error")

    posts = [r for r in watch.requests if r.method == "POST"]
    assert [urlsplit(r.url).path for r in posts] == [
        "/stream/v1/asr",
        "/v1/audio/transcriptions",
        "/stream/v1/asr",
    ]
    assert "format=wav" in posts[0].url
    assert watch.errors == [] or all("400" in e for e in watch.errors), watch.errors


# ------------------------------------------------------------------ auth


@pytest.fixture(scope="module")
def auth_bridge(
    nats_url: str, light_engine: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BridgeProcess]:
    # an ASR engine only: ready (and the status panel free of errors) with that
    proc = BridgeProcess(
        nats_url, tmp_path_factory.mktemp("logs"), APPTOKEN=TOKEN, HEALTH_TASKS="asr"
    ).start()
    yield proc
    proc.stop()


async def test_token_field(auth_bridge: BridgeProcess, open_console: Opener) -> None:
    page, watch = await open_console(auth_bridge.url, "/console/#status")
    access = page.locator("#access")
    result = page.locator("#access-result")
    # the service says a token is needed: the field opens with its words
    await expect(access).to_have_attribute("open", "")
    await expect(page.locator("#access-state")).to_have_text("required")
    await expect(result).to_contain_text(
        "HTTP 401 · 40000001 · Gateway:ACCESS_DENIED:Missing token"
    )
    await expect(page.locator("#status-error")).to_contain_text("40000001", timeout=15_000)
    await shot(page, "auth-required")

    # a wrong token: the service's refusal, shown as it comes
    await page.get_by_label("Token", exact=True).fill("wrong-token-0123456789")
    await page.get_by_role("button", name="Use token").click()
    await expect(page.locator("#access-state")).to_have_text("rejected")
    await expect(result).to_contain_text("Gateway:ACCESS_DENIED:The token 'wron")
    await expect(result).to_contain_text("is invalid!")
    # the WebSocket too refuses it, with NLS's TaskFailed
    await page.get_by_role("tab", name="Live ASR").click()
    await page.get_by_role("button", name="Start").click()
    await expect(page.locator("#live-error")).to_contain_text(
        "TaskFailed · 40000001 · Gateway:ACCESS_DENIED:The token 'wron", timeout=30_000
    )
    await expect(page.get_by_role("button", name="Start")).to_be_enabled(timeout=15_000)
    await shot(page, "auth-wrong-token")

    # the right one: everything works with it
    await page.get_by_label("Token", exact=True).fill(TOKEN)
    await page.get_by_role("button", name="Use token").click()
    await expect(page.locator("#access-state")).to_have_text("set")
    await expect(result).to_contain_text("accepts this token")
    await page.get_by_role("tab", name="Status").click()
    await expect(page.locator("#status-tasks tr[data-engine]").first).to_be_visible(timeout=15_000)
    await expect(page.locator("#status-error")).to_be_hidden(timeout=10_000)
    await page.get_by_role("tab", name="File ASR").click()
    await page.get_by_label("Audio file").set_input_files(DATA / "en_fox.wav")
    await page.get_by_role("button", name="Transcribe").click()
    await expect(page.locator("#file-text")).to_contain_text(FOX, timeout=90_000)
    await run_live(page)
    await expect(page.locator("#live-state")).to_contain_text("Listening", timeout=30_000)
    await page.get_by_role("button", name="Stop").click()
    await expect(page.locator("#live-state")).to_contain_text("Completed", timeout=60_000)
    await shot(page, "auth-token-accepted")

    # kept in this tab only (sessionStorage), sent only to this service, as the auth header or
    # the WebSocket's token parameter
    stored = await page.evaluate(
        "() => [sessionStorage.getItem('funspeech.console.token'), "
        "Object.keys(localStorage).filter(k => k.startsWith('funspeech.console.'))]"
    )
    assert stored == [TOKEN, []]
    assert elsewhere(watch.requests, auth_bridge.url) == []
    assert not [r.url for r in watch.requests if TOKEN in r.url]
    headers = [await r.all_headers() for r in watch.requests]
    with_token = [h for h in headers if TOKEN in json.dumps(h)]
    assert with_token and all(h.get("x-nls-token") == TOKEN for h in with_token)
    ws_tokens = [dict(re.findall(r"(\w+)=([^&]*)", urlsplit(ws.url).query)) for ws in watch.sockets]
    assert ws_tokens == [{"token": "wrong-token-0123456789"}, {"token": TOKEN}]


# ------------------------------------------------------------------ TTS (needs the TTS endpoints)


async def needs(bridge: BridgeProcess, method: str, path: str) -> None:
    """Skip while this bridge does not serve `path` at all (HTTP 404)."""
    status, _, _ = await http(method, f"{bridge.url}{path}")
    if status == 404:
        pytest.skip(f"needs TTS: the bridge answers 404 on {method} {path} (TTS not landed yet)")


@pytest.fixture
async def tts_bridge(bridge: BridgeProcess, request: pytest.FixtureRequest) -> BridgeProcess:
    """The bridge with a TTS engine behind it: skipped while the bridge has no TTS endpoints.
    Uses a `tts_engine` fixture when the suite has one; else the engines already running."""
    await needs(bridge, "GET", "/stream/v1/tts/voices")
    await needs(bridge, "GET", "/stream/v1/tts")
    with contextlib.suppress(pytest.FixtureLookupError):
        request.getfixturevalue("tts_engine")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 180
    while loop.time() < deadline:
        status, _, body = await http("GET", f"{bridge.url}/stream/v1/tts/voices")
        if status == 200 and json.loads(body).get("voices"):
            return bridge
        await asyncio.sleep(0.5)
    pytest.fail(
        "the bridge serves TTS but lists no voice within 180 s (last answer: HTTP "
        f"{status} {body[:300]!r}): is a TTS engine running? (a `tts_engine` fixture is used "
        "when the suite has one)"
    )


CASES = [  # api, format, sse
    ("rest", "pcm", False),
    ("rest", "mp3", False),
    ("ws", "wav", False),
    ("openai", "pcm", True),
]


@pytest.mark.parametrize(("api", "fmt", "sse"), CASES, ids=[f"{a}-{f}" for a, f, _ in CASES])
async def test_tts_plays_while_streaming(
    tts_bridge: BridgeProcess, open_console: Opener, api: str, fmt: str, sse: bool
) -> None:
    page, watch = await open_console(tts_bridge.url, "/console/#tts")
    panel = page.locator("#panel-tts")
    await expect(panel.locator("#tts-voice option").first).to_be_attached(timeout=15_000)
    await panel.get_by_label("API", exact=True).select_option(api)
    await panel.get_by_label("Format", exact=True).select_option(fmt)
    if sse:
        await panel.get_by_label("Server-sent events").check()
    await panel.get_by_label("Text", exact=True).fill(TTS_TEXT)
    await panel.get_by_role("button", name="Speak").click()
    stats = page.locator("#tts-stats")
    await expect(stats).to_have_attribute("data-phase", "done", timeout=120_000)
    await expect(page.locator("#tts-error")).to_be_hidden()
    data = await stats.evaluate("e => ({...e.dataset})")
    bytes_, played, duration = int(data["bytes"]), float(data["played"]), float(data["duration"])
    assert bytes_ > 1000, data
    assert duration > 2.0 and played >= 0.9 * duration, data  # the audio was played through
    assert data["mode"] in ("webaudio", "mediasource"), data  # streamed, not the whole file
    # playback began before the last byte of the synthesis arrived
    assert float(data["playStartMs"]) < float(data["endMs"]), data
    download = page.locator("#tts-download")
    await expect(download).to_be_visible()
    assert (await download.get_attribute("download") or "").endswith(f".{fmt}")
    if api == "ws":  # MetaInfo subtitles, one line per sentence, in order
        lines = page.locator("#tts-subtitles li")
        await expect(lines).to_have_count(4)
        texts = [t.split("\n")[-1] for t in await lines.all_inner_texts()]
        assert [t.rstrip(".").split()[-1] for t in texts] == ["synthesised", "sentence", "while",
                                                              "it"], texts  # fmt: skip
    await shot(page, f"tts-{api}-{fmt}")
    assert elsewhere(watch.requests, tts_bridge.url) == []
    assert watch.errors == []


@pytest.fixture(scope="module")
def clone_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    """A bridge in front of an engine that clones (CosyVoice on its test double,
    tests/cosyvoice_double.py) and an ASR engine for the console's "Transcribe" button."""
    root = tmp_path_factory.mktemp("clone")
    with running_nats(root / "jetstream") as url:
        engines = [
            EngineProcess(url, root, task="tts", **engine_env(model_tree(root))).start(),
            EngineProcess(url, root, ASR_LIGHT_MODEL="whisper-tiny.en",
                          ASR_LIGHT_MODELS="whisper-tiny.en").start(),
        ]  # fmt: skip
        bridge = BridgeProcess(url, root).start()
        try:
            wait_engines(url, 2, timeout=180, procs=engines)
            yield bridge
        finally:
            bridge.stop()
            for engine in engines:
                engine.stop()


@pytest.mark.parametrize("cloning", [False, True], ids=["light-engine", "cloning-engine"])
async def test_voice_cloned_used_and_deleted(
    tts_bridge: BridgeProcess, open_console: Opener, request: pytest.FixtureRequest, cloning: bool
) -> None:
    """Clone from an uploaded prompt, use the voice at once, delete it. With an engine that can
    clone the page must play the new voice; with the light engine alone it shows the
    service's error saying that no engine can clone."""
    await needs(tts_bridge, "POST", "/stream/v1/tts/voices")
    if cloning:
        tts_bridge = request.getfixturevalue("clone_bridge")
    _, _, health = await http("GET", f"{tts_bridge.url}/stream/v1/tts/health")
    assert json.loads(health)["clone_available"] is cloning
    name = "console-fox"
    page, watch = await open_console(tts_bridge.url, "/console/#voices")
    page.on("dialog", lambda d: asyncio.ensure_future(d.accept()))  # "Delete …?"
    voices = page.locator("#panel-voices")
    await voices.get_by_label("Name", exact=True).fill(name)
    await voices.get_by_label("Upload").set_input_files(DATA / "en_fox.wav")
    await voices.get_by_role("button", name="Transcribe the prompt now").click()
    await expect(voices.get_by_label("Transcript of the prompt")).to_have_value(FOX, timeout=90_000)
    await voices.get_by_role("button", name="Create voice").click()
    row = page.locator(f'#voices-table tr[data-voice="{name}"]')
    await expect(row).to_be_visible(timeout=60_000)
    await expect(page.locator("#voices-error")).to_be_hidden()
    await shot(page, "voice-cloned")

    # use it at once: the TTS panel with the voice selected; the page plays what the service
    # answers for it, or shows the service's error (a light engine may not clone)
    await row.get_by_role("button", name=f"Use {name}").click()
    await expect(page.get_by_role("tab", name="Text to speech")).to_have_attribute(
        "aria-selected", "true"
    )
    tts = page.locator("#panel-tts")
    await expect(tts.get_by_label("Voice", exact=True)).to_have_value(name)
    await tts.get_by_label("API", exact=True).select_option("rest")
    await tts.get_by_label("Format", exact=True).select_option("pcm")
    await tts.get_by_label("Text", exact=True).fill("A cloned voice says hello.")
    expected_status, _, expected = await http(
        "POST",
        f"{tts_bridge.url}/stream/v1/tts",
        json={"text": "A cloned voice says hello.", "voice": name, "format": "pcm"},
    )
    await tts.get_by_role("button", name="Speak").click()
    stats = page.locator("#tts-stats")
    if cloning:  # real audio in the new voice
        assert expected_status == 200 and not expected.startswith(b"{"), expected[:300]
        await expect(stats).to_have_attribute("data-phase", "done", timeout=120_000)
        assert float(await stats.get_attribute("data-played") or 0) > 0.5
    else:  # the service's clear error, as it said it
        message = json.loads(expected)["message"]
        assert expected_status == 400 and "clone" in message, message
        await expect(page.locator("#tts-error")).to_contain_text(message, timeout=60_000)
    await shot(page, "voice-used")

    # delete it: gone from the list and from the TTS voices
    await page.get_by_role("tab", name="Voices").click()
    await row.get_by_role("button", name=f"Delete {name}").click()
    await expect(row).to_have_count(0, timeout=30_000)
    await expect(page.locator(f'#tts-voice option[value="{name}"]')).to_have_count(0)
    _, _, body = await http("GET", f"{tts_bridge.url}/stream/v1/tts/voices")
    assert name not in json.loads(body)["voices"]
    assert elsewhere(watch.requests, tts_bridge.url) == []


async def test_async_job_progress_and_download(
    tts_bridge: BridgeProcess, open_console: Opener
) -> None:
    await needs(tts_bridge, "GET", "/rest/v1/tts/async")
    page, _ = await open_console(tts_bridge.url, "/console/#async")
    panel = page.locator("#panel-async")
    await expect(panel.locator("#async-voice option").first).to_be_attached(timeout=15_000)
    await panel.get_by_label("Text", exact=True).fill(" ".join([TTS_TEXT] * 4))
    await panel.get_by_role("button", name="Submit job").click()
    job = page.locator("#async-jobs tbody tr").first
    await expect(job).to_be_visible(timeout=30_000)
    await expect(job).to_have_attribute("data-done", "true", timeout=240_000)
    await expect(job.locator(".job-state")).to_have_text("SUCCESS")
    link = job.get_by_role("link", name="Download")
    href = await link.get_attribute("href")
    assert href and origin(href) == origin(tts_bridge.url)
    status, _, body = await http("GET", href)
    assert status == 200 and len(body) > 1000 and body[:4] == b"RIFF"
    await shot(page, "async-job-done")
