"""The bus contract used directly, as an internal service or any NATS client would: no bridge."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import wave
from pathlib import Path

import nats
import pytest
from nats.errors import NoRespondersError

from bus.client import Bus, BusError
from bus.schemas import AsrParams
from bus.subjects import DEFAULT as SUBJECTS
from bus.subjects import MAX_PAYLOAD
from tests.conftest import DATA, ROOT, EngineProcess
from tests.harness import check_malformed_opens
from tests.nls_client import clip, read_pcm, silence
from tests.textmetrics import wer

PLAIN_SCRIPT = ROOT / "docs" / "examples" / "asr_over_nats.py"


@pytest.fixture
async def bus(nats_url: str, light_engine: EngineProcess) -> Bus:
    client = await Bus.connect(nats_url)
    await client.directory.wait_for(1, 30)
    yield client
    await client.close()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def until(condition, timeout: float, what: str) -> None:
    """Poll `condition()` (sync or async) until true, at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


async def test_engine_is_a_discoverable_micro_service(bus: Bus) -> None:
    """What `nats micro info funspeech-asr` shows: the entry endpoints in queue group asr."""
    name = SUBJECTS.service("asr")
    info = json.loads((await bus.nc.request(f"$SRV.INFO.{name}", b"", timeout=2)).data)
    assert info["name"] == name == "funspeech-asr"
    assert info["metadata"]["backend"] == "light"
    assert "whisper-base" in info["metadata"]["models"].split(",")
    endpoints = {e["subject"]: e["queue_group"] for e in info["endpoints"]}
    for subject in ("fs.v1.asr.open", "fs.v1.asr.recognize", "fs.v1.asr.open.whisper-base"):
        assert endpoints[subject] == "asr", endpoints
    stats = json.loads((await bus.nc.request(f"$SRV.STATS.{name}", b"")).data)
    assert stats["endpoints"][0]["data"]["capacity"] >= 1
    engine = bus.directory.engines("asr")[0]
    assert engine.backend == "light" and engine.device == "cpu" and engine.capacity >= 10
    assert engine.mode == "all"


async def test_one_shot_is_one_request(bus: Bus) -> None:
    pcm = read_pcm("en_fox.wav")
    assert len(pcm) < MAX_PAYLOAD
    result = await bus.recognize(pcm, AsrParams(language="en"))
    assert wer(clip("en_fox.wav")["text"], result.text) <= 0.2, result.text
    assert result.engine_id == bus.directory.engines("asr")[0].id
    assert abs(result.duration_ms - len(pcm) // 32) <= 1


async def test_one_shot_over_max_payload_uses_a_session(bus: Bus) -> None:
    """Audio over the server's max_payload travels in bus-sized chunks of a file session."""
    names = ["en_fox.wav", "en_meeting.wav", "en_fox.wav"] * 6
    pcm = b"".join(read_pcm(n) + silence(800) for n in names)
    assert len(pcm) > bus.nc.max_payload
    transcript = await bus.recognize(pcm, AsrParams(language="en"))
    expected = " ".join(clip(n)["text"] for n in names)
    assert wer(expected, transcript.text) <= 0.2, transcript.text
    times = [(s.begin_ms, s.time_ms) for s in transcript.segments]
    assert times == sorted(times) and all(b <= e for b, e in times)
    assert abs(transcript.duration_ms - len(pcm) // 32) <= 1


async def test_streaming_session_events(bus: Bus) -> None:
    session = await bus.open_asr(AsrParams(language="en", enable_intermediate_result=True))
    pcm = read_pcm("en_two_sentences.wav") + silence(1000)
    for pos in range(0, len(pcm), 3200):
        await session.send(pcm[pos : pos + 3200])
    await session.stop()
    events = [e async for e in session]
    assert events[-1].type == "completed"
    assert not [e for e in events if e.type == "ack"], "acks are flow control, not events"
    ends = [e for e in events if e.type == "end"]
    assert [e.index for e in ends] == [1, 2]
    for end, expected in zip(ends, clip("en_two_sentences.wav")["sentences"], strict=True):
        assert wer(expected, end.text) <= 0.2, end.text


async def test_unknown_model_is_refused(bus: Bus) -> None:
    with pytest.raises(BusError) as err:
        await bus.open_asr(AsrParams(model="no-such-model"))
    assert err.value.code == 40000003
    assert "whisper-base" in err.value.message


async def test_plain_nats_script(nats_url: str, light_engine: EngineProcess) -> None:
    """docs/examples/asr_over_nats.py uses nats-py alone, JSON on the wire."""
    source = PLAIN_SCRIPT.read_text()
    assert "from bus" not in source and "import bus" not in source
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(PLAIN_SCRIPT), "--nats", nats_url, str(DATA / "en_fox.wav")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    one_shot = next(line for line in lines if line.startswith("one-shot:"))
    sentences = [line for line in lines if line.startswith("sentence ")]
    expected = clip("en_fox.wav")["text"]
    assert wer(expected, one_shot.removeprefix("one-shot:")) <= 0.2, out.stdout
    assert wer(expected, " ".join(s.split(":", 1)[1] for s in sentences)) <= 0.2, out.stdout
    assert lines[-1].startswith("completed:"), out.stdout


async def test_full_engine_leaves_the_queue_group(own_nats: str, tmp_path: Path) -> None:
    """A full engine takes no entry request: a plain requester gets "no responders" at once,
    the bus client 40000005 at once; when the slot frees, the entry subject answers again."""
    engine = EngineProcess(own_nats, tmp_path, ASR_MAX_SESSIONS="1").start()
    bus = await Bus.connect(own_nats)
    plain = await nats.connect(own_nats)
    try:
        await bus.directory.wait_for(1, 60)
        session = await bus.open_asr()

        async def refused() -> bool:
            try:
                await plain.request(SUBJECTS.entry("asr", "open"), b"{}", timeout=5)
            except NoRespondersError:
                return True
            return False

        await until(refused, 5, "the full engine left the queue group")
        began = time.monotonic()
        with pytest.raises(BusError) as err:
            await bus.open_asr(timeout=10)
        assert err.value.code == 40000005 and time.monotonic() - began < 1.0
        with pytest.raises(BusError) as err:
            await bus.recognize(read_pcm("en_fox.wav"), timeout=10)
        assert err.value.code == 40000005 and time.monotonic() - began < 2.0
        await session.abort()
        await until(lambda: bus.directory.engines("asr")[0].active == 0, 10, "slot freed")

        async def served() -> bool:
            return not await refused()

        await until(served, 5, "the engine rejoined the queue group")
        result = await bus.recognize(read_pcm("en_fox.wav"), AsrParams(language="en"))
        assert "fox" in result.text.lower()
    finally:
        await plain.close()
        await bus.close()
        engine.stop()


async def test_no_engine_is_said_at_once(own_nats: str) -> None:
    bus = await Bus.connect(own_nats)
    try:
        began = time.monotonic()
        with pytest.raises(BusError) as err:
            await bus.open_asr(timeout=10)
        assert err.value.code == 50000000 and "No ASR engine" in err.value.message
        with pytest.raises(BusError) as err:
            await bus.recognize(read_pcm("en_fox.wav"), timeout=10)
        assert err.value.code == 50000000
        assert time.monotonic() - began < 1.0
    finally:
        await bus.close()


async def test_namespaces_keep_deployments_apart(own_nats: str, tmp_path: Path) -> None:
    engine = EngineProcess(own_nats, tmp_path, FUNSPEECH_NAMESPACE="blue").start()
    blue = await Bus.connect(own_nats, namespace="blue")
    default = await Bus.connect(own_nats)
    try:
        await blue.directory.wait_for(1, 60)
        info = await blue.nc.request("$SRV.INFO.blue-funspeech-asr", b"", timeout=2)
        assert json.loads(info.data)["endpoints"][0]["subject"].startswith("blue.fs.v1.")
        assert not default.directory.engines()
        with pytest.raises(BusError) as err:
            await default.recognize(read_pcm("en_fox.wav"))
        assert err.value.code == 50000000
        result = await blue.recognize(read_pcm("en_fox.wav"), AsrParams(language="en"))
        assert "fox" in result.text.lower()
    finally:
        await blue.close()
        await default.close()
        engine.stop()


def _speech(seconds: int) -> bytes:
    one = read_pcm("en_two_sentences.wav") + silence(300)
    return (one * (seconds * 32000 // len(one) + 1))[: seconds * 32000]


async def test_flooding_a_session_is_slowed_and_memory_bounded(
    nats_url: str, light_engine: EngineProcess
) -> None:
    """60 s of speech sent as fast as possible: the bus client waits on the engine's acks
    (never more than the window ahead), the engine's memory stays bounded, the session ends
    normally. A plain client that ignores the window is refused with a clear error."""
    bus = await Bus.connect(nats_url)
    plain = await nats.connect(nats_url)
    try:
        engine = (await bus.directory.wait_for(1, 30, task="asr"))[0]
        before = rss_kb(engine.pid)
        session = await bus.open_asr(AsrParams(language="en", enable_intermediate_result=False))
        window = session._window
        ahead = 0
        pcm = _speech(60)
        began = time.monotonic()
        for pos in range(0, len(pcm), 32000):
            await session.send(pcm[pos : pos + 32000])
            ahead = max(ahead, session._sent - session._acked)
        sent_in = time.monotonic() - began
        assert ahead <= window, (ahead, window)
        assert sent_in > 1.0, "the engine cannot take 60 s of speech in a second: no backpressure"
        await session.stop()
        events = [e async for e in session]
        assert events[-1].type == "completed", events[-1]
        assert events[-1].duration_ms == 60_000
        assert rss_kb(engine.pid) - before < 60_000, "engine memory grew with the flood"

        # a client that ignores the window: refused, not buffered
        inbox = plain.new_inbox()
        sub = await plain.subscribe(inbox)
        opened = json.dumps({"events_subject": inbox, "sample_rate": 16000}).encode()
        reply = json.loads((await plain.request(SUBJECTS.entry("asr", "open"), opened, 5)).data)
        assert reply["ok"], reply
        for pos in range(0, len(pcm), MAX_PAYLOAD):
            await plain.publish(reply["audio_subject"], pcm[pos : pos + MAX_PAYLOAD])
        async with asyncio.timeout(30):
            while True:
                event = json.loads((await sub.next_msg(timeout=30)).data)
                if event["type"] == "error":
                    break
        assert event["code"] == 40000005 and "faster than" in event["message"], event
        assert rss_kb(engine.pid) - before < 60_000
    finally:
        await plain.close()
        await bus.close()


def test_wav_body_on_the_recognize_subject(nats_url: str, light_engine: EngineProcess) -> None:
    """A WAV file as the body (what `nats request ... < clip.wav` sends) is sniffed."""

    async def run() -> dict:
        nc = await nats.connect(nats_url)
        try:
            data = (DATA / "en_fox.wav").read_bytes()
            msg = await nc.request(
                SUBJECTS.entry("asr", "recognize"),
                data,
                timeout=60,
                headers={"Fs-Encoding": "json", "language": "en"},
            )
            return json.loads(msg.data)
        finally:
            await nc.close()

    with wave.open(str(DATA / "en_fox.wav")) as w:
        seconds = w.getnframes() / w.getframerate()
    reply = asyncio.run(run())
    assert "fox" in reply["text"].lower(), reply
    assert abs(reply["duration_ms"] - seconds * 1000) < 50


async def test_malformed_open_is_refused_and_the_engine_serves_on(bus: Bus) -> None:
    await check_malformed_opens(bus.nc, SUBJECTS.entry("asr", "open"))
