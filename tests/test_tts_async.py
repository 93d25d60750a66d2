"""Async long-text TTS (/rest/v1/tts/async) end to end: a real nats-server with JetStream, two
real TTS engines on the light backend and real bridges; NLS REST clients (aiohttp)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import nats
import pytest
from aiohttp import web

from bus.client import Bus
from bus.jobs import JobStore
from bus.schemas import JobWork, TtsJob, TtsParams
from bus.subjects import DEFAULT as SUBJECTS
from bus.voices import VoiceStore
from engines.tts.text import split_sentences
from funspeech.procs import free_port, nats_server_binary
from tests.harness import BridgeProcess, EngineProcess, Proc, running_nats, wait_engines, wait_port
from tests.tts_async_client import (
    PATH,
    check_complete,
    download,
    finished,
    poll,
    request,
    sentences_text,
    submit,
    wav_ms,
)

TOKEN, APPKEY = "async-token-0123456789", "async-appkey"
ENGINE_ENV = {"TTS_MAX_SESSIONS": "4", "TTS_LIGHT_WARMUP": "false"}


@pytest.fixture(scope="module")
def bus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_nats(tmp_path_factory.mktemp("jetstream")) as url:
        yield url


@pytest.fixture(scope="module")
def engines(
    bus_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[EngineProcess]]:
    """Two TTS engines (room for 4 each): a long job spreads over both."""
    logs = tmp_path_factory.mktemp("logs")
    procs = [EngineProcess(bus_url, logs, task="tts", **ENGINE_ENV).start() for _ in range(2)]
    try:
        wait_engines(bus_url, 2, timeout=180, procs=procs, task="tts")
        yield procs
    finally:
        for proc in procs:
            proc.stop()


@pytest.fixture(scope="module")
def bridge(
    bus_url: str, engines: list[EngineProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BridgeProcess]:
    """Auth off; callbacks to this host allowed, retried quickly."""
    proc = BridgeProcess(
        bus_url,
        tmp_path_factory.mktemp("logs"),
        TTS_ASYNC_ALLOW_PRIVATE_NOTIFY="true",
        TTS_ASYNC_NOTIFY_BACKOFF="0.2",
        TTS_ASYNC_NOTIFY_ATTEMPTS="4",
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
def auth_bridge(
    bus_url: str, engines: list[EngineProcess], tmp_path: Path
) -> Iterator[BridgeProcess]:
    """Auth on, callbacks to public hosts only. Per test: every bridge takes callbacks, and
    one that refuses this host's targets must not be running during the callback test."""
    proc = BridgeProcess(bus_url, tmp_path, APPTOKEN=TOKEN, APPKEY=APPKEY).start()
    yield proc
    proc.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# ---------------------------------------------------------------- the happy paths


async def test_submit_poll_download(bridge: BridgeProcess, http: aiohttp.ClientSession) -> None:
    text = sentences_text(24)
    started = time.monotonic()
    async with http.post(bridge.url + PATH, json=request(text, sample_rate=16000)) as r:
        submitted = await r.json()
    assert r.status == 200 and time.monotonic() - started < 5, submitted
    assert submitted["status"] == 200 and submitted["error_message"] == "SUCCESS"
    task_id = submitted["data"]["task_id"]
    assert len(task_id) == 32 and submitted["data"]["audio_address"] is None

    status, first = await poll(http, bridge.url, task_id)
    assert status == 200 and first["data"]["task_id"] == task_id
    assert first["error_message"] in ("RUNNING", "SUCCESS")
    assert 0 <= first["data"]["progress"] <= 1

    answer = await finished(http, bridge.url, task_id, 120)
    data = answer["data"]
    assert data["progress"] == 1 and data["parts_done"] == data["parts_total"] >= 2
    address = data["audio_address"]
    assert address == f"{bridge.url}/rest/v1/tts/async/audio/{task_id}.wav"  # absolute
    status, content_type, audio = await download(http, address)
    assert status == 200 and content_type == "audio/wav" and audio[:4] == b"RIFF"
    check_complete(answer, text, wav_ms(audio))

    # a client behind a proxy gets links to the proxy
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "speech.example"}
    async with http.get(bridge.url + PATH, params={"task_id": task_id}, headers=headers) as r:
        proxied = (await r.json())["data"]["audio_address"]
    assert proxied == f"https://speech.example/rest/v1/tts/async/audio/{task_id}.wav"


async def test_pcm_and_mp3(bridge: BridgeProcess, http: aiohttp.ClientSession) -> None:
    text = sentences_text(3)
    ids = {
        fmt: await submit(http, bridge.url, request(text, format=fmt, sample_rate=rate))
        for fmt, rate in (("pcm", 24000), ("mp3", 16000))
    }
    for fmt, task_id in ids.items():
        answer = await finished(http, bridge.url, task_id, 120)
        status, content_type, audio = await download(http, answer["data"]["audio_address"])
        assert status == 200, audio[:300]
        duration = answer["data"]["duration_ms"]
        if fmt == "pcm":
            assert content_type == "audio/L16;rate=24000;channels=1"
            check_complete(answer, text, len(audio) / 2 / 24)
        else:
            assert content_type == "audio/mpeg"
            with av.open(io.BytesIO(audio)) as container:
                decoded = sum(f.samples for f in container.decode(audio=0)) / 16
            assert abs(decoded - duration) < 200, (decoded, duration)  # encoder padding


@pytest.mark.timeout(420)
async def test_long_text_spreads_over_engines(
    bridge: BridgeProcess, bus_url: str, http: aiohttp.ClientSession
) -> None:
    """20,000+ characters: the parts go to both engines, the audio is whole and in order."""
    text = sentences_text(520)
    assert len(text) >= 20_000
    task_id = await submit(http, bridge.url, request(text, speech_rate=500))  # 2x: less to do
    answer = await finished(http, bridge.url, task_id, 360)
    status, _, audio = await download(http, answer["data"]["audio_address"])
    assert status == 200
    check_complete(answer, text, wav_ms(audio))
    assert answer["data"]["parts_total"] >= 50
    nc = await nats.connect(bus_url)
    try:
        job = await (await JobStore.open(nc, SUBJECTS)).get(task_id)
    finally:
        await nc.close()
    assert job is not None and len(job.engines) == 2, job.engines  # not held by one engine


async def test_bus_client_without_the_bridge(engines: list[EngineProcess], bus_url: str) -> None:
    bus = await Bus.connect(bus_url)
    try:
        await bus.directory.wait_for(2, 30, task="tts")
        text = sentences_text(4)
        job = await bus.submit_tts_job(text, TtsParams(voice="英文男", format="wav"))
        store = await bus.jobs()
        done = await store.wait(job.task_id, timeout=120)
        assert done.status == "SUCCESS", done
        audio = await store.audio(job.task_id)
        assert audio is not None and abs(wav_ms(audio) - done.duration_ms) <= 1
        sentences = await store.sentences(job.task_id)
        assert [s.text for s in sentences] == split_sentences(text) and done.sentence_count == 4
    finally:
        await bus.close()


async def test_store_cas_dedup_and_retention(own_nats: str) -> None:
    """The job store's rules on a bus without engines: concurrent updates all land (CAS on
    the KV revision), a repeated publish within the duplicate window is dropped (Nats-Msg-Id),
    services set the retention and a plain client keeps it."""
    nc = await nats.connect(own_nats)
    try:
        store = await JobStore.open(nc, SUBJECTS, retention_s=3600)
        job = await store.submit("One. Two.", TtsParams(voice="英文男"))

        def add(index: int) -> Callable[[TtsJob], bool]:
            def change(state: TtsJob) -> bool:
                state.parts_done = sorted({*state.parts_done, index})
                return True

            return change

        await asyncio.gather(*(store.update(job.task_id, add(i)) for i in range(20)))
        stored = await store.get(job.task_id)
        assert stored is not None and stored.parts_done == list(range(20))

        part = JobWork(kind="part", task_id=job.task_id, index=3, text="Two.")
        await store.queue(job, part)
        await store.queue(job, part)  # a repeat (a redelivered split): dropped
        info = await store.js.stream_info(store.stream)
        assert info.state.messages == 2  # the split and one part
        assert info.config.max_age == 3600 and info.config.duplicate_window == 120

        client = await JobStore.open(nc, SUBJECTS)  # None: keeps what the services set
        assert (await client.js.stream_info(store.stream)).config.max_age == 3600
        await JobStore.open(nc, SUBJECTS, retention_s=5)  # shorter than the window
        info = await store.js.stream_info(store.stream)
        assert info.config.max_age == 5 and info.config.duplicate_window == 5
        assert await store.get("f" * 32) is None and await store.get("not a key!") is None
        with pytest.raises(KeyError):
            await store.wait("f" * 32, timeout=5)
    finally:
        await nc.close()


# ---------------------------------------------------------------- bad input


BAD = [  # (what, body, HTTP status, NLS code, words of the message)
    ("over-long text", request("a. " * 33_334), 400, 40000003, "longer than 100,000"),
    ("blank text", request("   "), 400, 40000003, "text is required"),
    ("unknown voice", request("Hello.", voice="nobody"), 400, 40000003, "Unknown voice"),
    ("voice too long", request("Hello.", voice="v" * 500), 400, 40000003, "longer than 128"),
    ("bad format", request("Hello.", format="ogg"), 400, 40000003, "format"),
    ("bad sample rate", request("Hello.", sample_rate=12345), 400, 41010101, "sample_rate"),
    ("no payload", {"header": {}}, 400, 40000003, "payload is required"),
    ("notify without url", {"payload": {**request("Hi.")["payload"], "enable_notify": True}},
     400, 40000003, "notify_url is required"),
    ("notify not http", {"payload": {**request("Hi.")["payload"], "enable_notify": True,
                                     "notify_url": "ftp://example.com/x"}},
     400, 40000003, "http(s)"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "body", "status", "code", "words"), BAD, ids=[b[0] for b in BAD])
async def test_bad_requests(
    bridge: BridgeProcess,
    http: aiohttp.ClientSession,
    what: str,
    body: dict[str, Any],
    status: int,
    code: int,
    words: str,
) -> None:
    async with http.post(bridge.url + PATH, json=body) as r:
        answer = await r.json()
    assert r.status == status and answer["status"] == status, answer
    assert answer["error_code"] == code and words in answer["error_message"], answer
    assert answer["url"] == PATH and len(answer["request_id"]) == 32


async def test_bad_polls_and_bodies(bridge: BridgeProcess, http: aiohttp.ClientSession) -> None:
    status, answer = await poll(http, bridge.url, "0" * 32)
    assert status == 404 and answer["error_code"] == 40000003
    assert "does not exist" in answer["error_message"]
    status, answer = await poll(http, bridge.url, "not-a-task")
    assert status == 400 and "task_id" in answer["error_message"]
    async with http.post(bridge.url + PATH, data=b"{not json") as r:
        answer = await r.json()
    assert r.status == 400 and answer["error_code"] == 40000002
    async with http.get(f"{bridge.url}/rest/v1/tts/async/audio/{'0' * 32}.wav") as r:
        assert r.status == 404 and (await r.json())["error_code"] == 40000003
    async with http.get(f"{bridge.url}/rest/v1/tts/async/audio/whatever.ogg") as r:
        assert r.status == 404


async def test_private_notify_target_refused(
    auth_bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    """Without TTS_ASYNC_ALLOW_PRIVATE_NOTIFY: loopback, private and link-local targets (also
    by name) are refused at submit."""
    for target in ("http://127.0.0.1:9/cb", "http://10.1.2.3/cb", "http://169.254.169.254/",
                   "http://localhost:8080/cb", "http://[::1]/cb"):  # fmt: skip
        body = request("Hello.")
        body["payload"] |= {"enable_notify": True, "notify_url": target}
        body["header"] = {"appkey": APPKEY, "token": TOKEN}
        async with http.post(auth_bridge.url + PATH, json=body) as r:
            answer = await r.json()
        assert r.status == 400 and "not a public address" in answer["error_message"], answer


async def test_clone_voice_without_a_cloning_engine(
    bridge: BridgeProcess, bus_url: str, http: aiohttp.ClientSession
) -> None:
    nc = await nats.connect(bus_url)
    voices = await VoiceStore.open(nc, SUBJECTS)
    wav = (Path(__file__).parent / "data" / "en_fox.wav").read_bytes()
    await voices.put("async-fox", wav, text="the fox", sample_rate=16000, duration_ms=3000)
    try:
        async with http.post(bridge.url + PATH, json=request("Hi.", voice="async-fox")) as r:
            answer = await r.json()
        assert r.status == 400 and "no running TTS engine can clone" in answer["error_message"]
    finally:
        await voices.delete("async-fox")
        await nc.close()


# ---------------------------------------------------------------- credentials and links


async def test_credentials_and_signed_links(
    auth_bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    url = auth_bridge.url
    body = request(sentences_text(2))
    for header, words in (
        ({}, "Missing token"),
        ({"appkey": APPKEY, "token": "wrong-token-0123456789"}, "token"),
        ({"appkey": "wrong-appkey", "token": TOKEN}, "appkey"),
    ):
        async with http.post(url + PATH, json=body | {"header": header}) as r:
            answer = await r.json()
        assert r.status == 401 and answer["error_code"] == 40000001, answer
        assert words in answer["error_message"]
    task_id = await submit(http, url, body | {"header": {"appkey": APPKEY, "token": TOKEN}})
    status, answer = await poll(http, url, task_id, appkey=APPKEY, token="x" * 20)
    assert status == 401 and answer["error_code"] == 40000001
    status, answer = await poll(http, url, task_id, token=TOKEN)
    assert status == 401 and "appkey" in answer["error_message"]
    answer = await finished(http, url, task_id, 120, appkey=APPKEY, token=TOKEN)

    address = answer["data"]["audio_address"]  # signed: fetched with nothing else
    assert "expires=" in address and "signature=" in address
    status, _, audio = await download(http, address)
    assert status == 200 and audio[:4] == b"RIFF"
    plain = address.split("?")[0]
    status, _, denied = await download(http, plain)
    assert status == 401 and b"40000001" in denied
    status, _, _ = await download(http, f"{plain}?token={TOKEN}&appkey={APPKEY}")
    assert status == 200
    tampered = address[:-4] + ("0000" if not address.endswith("0000") else "1111")
    status, _, denied = await download(http, tampered)
    assert status == 401 and b"fresh audio_address" in denied
    # an expired link, signed with the key every bridge derives from APPTOKEN
    key = hmac.new(TOKEN.encode(), b"funspeech async audio links", hashlib.sha256).digest()
    name, expires = f"{task_id}.wav", int(time.time()) - 1
    signature = hmac.new(key, f"{name}:{expires}".encode(), hashlib.sha256).hexdigest()
    fresh = int(time.time()) + 60
    good = hmac.new(key, f"{name}:{fresh}".encode(), hashlib.sha256).hexdigest()
    status, _, _ = await download(http, f"{plain}?expires={fresh}&signature={good}")
    assert status == 200  # the derivation is what the bridge uses
    status, _, denied = await download(http, f"{plain}?expires={expires}&signature={signature}")
    assert status == 401


# ---------------------------------------------------------------- callbacks


class CallbackTarget:
    """A notify_url server on 127.0.0.1 that fails the first `fail_first` calls per job."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.calls: dict[str, list[dict[str, Any]]] = {}
        self.answered: dict[str, list[int]] = {}
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        task_id = (body.get("data") or {}).get("task_id", "?")
        calls = self.calls.setdefault(task_id, [])
        calls.append(body)
        status = 500 if len(calls) <= self.fail_first or "always-fail" in request.path else 200
        self.answered.setdefault(task_id, []).append(status)
        return web.json_response({}, status=status)


@pytest.fixture
async def target() -> AsyncIterator[CallbackTarget]:
    server = CallbackTarget(fail_first=2)
    app = web.Application()
    app.router.add_post("/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


async def _quiet(bus_url: str) -> None:
    """Until the callback consumer has nothing waiting, in flight or scheduled (bounded)."""
    nc = await nats.connect(bus_url)
    js = nc.jetstream()
    stream, consumer = SUBJECTS.bucket("jobs"), SUBJECTS.bucket("tts_notifiers")
    try:
        async with asyncio.timeout(60):
            while True:
                info = await js.consumer_info(stream, consumer)
                if not info.num_pending and not info.num_ack_pending and not info.num_redelivered:
                    return
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


@pytest.mark.timeout(300)
async def test_notify_once_per_job_despite_failures(
    bridge: BridgeProcess,
    bus_url: str,
    target: CallbackTarget,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    """Two bridges share the callbacks: each job's target gets exactly one successful call,
    after two failed ones; a failed job gets NLS's failure body; a target that always fails
    is given up after TTS_ASYNC_NOTIFY_ATTEMPTS."""
    second = BridgeProcess(
        bus_url,
        tmp_path,
        TTS_ASYNC_ALLOW_PRIVATE_NOTIFY="true",
        TTS_ASYNC_NOTIFY_BACKOFF="0.2",
        TTS_ASYNC_NOTIFY_ATTEMPTS="4",
    ).start()
    try:

        def with_notify(body: dict[str, Any], path: str = "/cb") -> dict[str, Any]:
            body["payload"] |= {"enable_notify": True, "notify_url": target.url + path}
            return body

        good = [await submit(http, bridge.url, with_notify(request(sentences_text(2, i))))
                for i in range(3)]  # fmt: skip
        failing = await submit(
            http, second.url, with_notify(request("안녕하세요.", voice="韩语女"))
        )
        hopeless = await submit(
            http, bridge.url, with_notify(request("One more.", voice="英文男"), "/always-fail")
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 180
        everyone = [*good, failing, hopeless]
        while (
            not all(200 in target.answered.get(t, []) for t in [*good, failing])
            or len(target.answered.get(hopeless, [])) < 4
        ):
            assert loop.time() < deadline, target.answered
            await asyncio.sleep(0.2)
        await _quiet(bus_url)
    finally:
        second.stop()
    for task_id in [*good, failing]:
        assert target.answered[task_id] == [500, 500, 200], (task_id, target.answered)
    assert target.answered[hopeless] == [500] * 4  # TTS_ASYNC_NOTIFY_ATTEMPTS, then given up
    assert set(target.calls) == set(everyone)
    for task_id in good:
        body = target.calls[task_id][-1]
        assert body["error_code"] == 20000000 and body["error_message"] == "SUCCESS"
        assert body["data"]["audio_address"].startswith(bridge.url)
        assert body["data"]["notify_custom"] == target.url + "/cb"
        assert body["data"]["sentences"]
    failed = target.calls[failing][-1]
    assert failed["error_code"] == 40000003 and "Korean" in failed["error_message"]
    assert failed["url"] == target.url + "/cb" and failed["status"] == 400
    status, answer = await poll(http, bridge.url, failing)
    assert status == 200 and answer["error_code"] == 40000003  # the poll says FAILED too
    logs = bridge.log() + second.log()
    assert f"job {hopeless}: giving up the callback" in logs


# ---------------------------------------------------------------- retention and no JetStream


@pytest.mark.timeout(240)
async def test_retention_removes_job_and_audio(own_nats: str, tmp_path: Path) -> None:
    env = {"TTS_ASYNC_RETENTION": "12"}
    engine = EngineProcess(own_nats, tmp_path, task="tts", **ENGINE_ENV, **env).start()
    try:
        wait_engines(own_nats, 1, timeout=180, procs=[engine], task="tts")
        bridge = BridgeProcess(own_nats, tmp_path, **env).start()
        try:
            async with aiohttp.ClientSession() as http:
                task_id = await submit(http, bridge.url, request("Kept for a short while."))
                answer = await finished(http, bridge.url, task_id, 60)
                address = answer["data"]["audio_address"]
                status, _, audio = await download(http, address)
                assert status == 200 and audio[:4] == b"RIFF"
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 90
                while True:  # JetStream removes both once their age passes the retention
                    polled, _ = await poll(http, bridge.url, task_id)
                    fetched, _, _ = await download(http, address)
                    if polled == fetched == 404:
                        break
                    assert loop.time() < deadline, (polled, fetched)
                    await asyncio.sleep(0.5)
        finally:
            bridge.stop()
    finally:
        engine.stop()


@pytest.fixture
def plain_nats(tmp_path: Path) -> Iterator[str]:
    """A nats-server without JetStream, as someone may already run."""
    port = free_port()
    server = Proc("nats-plain", [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port)],
                  tmp_path).start()  # fmt: skip
    try:
        wait_port(port, 15, server)
        yield f"nats://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.mark.timeout(240)
async def test_without_jetstream_a_clear_error(plain_nats: str, tmp_path: Path) -> None:
    engine = EngineProcess(plain_nats, tmp_path, task="tts", **ENGINE_ENV).start()
    bridge = BridgeProcess(plain_nats, tmp_path).start()
    try:
        wait_engines(plain_nats, 1, timeout=180, procs=[engine], task="tts")
        async with aiohttp.ClientSession() as http:
            for method, kw in (("POST", {"json": request("Hello.")}),
                               ("GET", {"params": {"task_id": "0" * 32}})):  # fmt: skip
                started = time.monotonic()
                async with http.request(method, bridge.url + PATH, **kw) as r:
                    answer = await r.json()
                assert time.monotonic() - started < 5  # nothing hangs
                assert r.status == 503 and answer["error_code"] == 50000000, answer
                assert "JetStream" in answer["error_message"] and "-js" in answer["error_message"]
        bus = await Bus.connect(plain_nats)  # presets still work without JetStream
        try:
            parts = [m async for m in bus.synthesize("Hello.", TtsParams(voice="英文男"))]
            assert parts[-1].kind == "completed"
        finally:
            await bus.close()
    finally:
        bridge.stop()
        engine.stop()
    for proc in (bridge, engine):  # start-up says it once, with the fix
        lines = [line for line in proc.log().splitlines() if "WARNING" in line]
        assert len(lines) == 1 and "JetStream" in lines[0] and "-js" in lines[0], lines
