"""The bus contract used directly, as an internal service would: no bridge involved."""

from __future__ import annotations

import json

import pytest

from bus import subjects
from bus.client import Bus, BusError
from bus.schemas import AsrParams
from tests.conftest import EngineProcess
from tests.nls_client import clip, read_pcm, silence
from tests.textmetrics import wer


@pytest.fixture
async def bus(nats_url: str, light_engine: EngineProcess) -> Bus:
    client = await Bus.connect(nats_url)
    await client.directory.wait_for(1, 30)
    yield client
    await client.close()


async def test_engine_is_a_discoverable_micro_service(bus: Bus) -> None:
    reply = await bus.nc.request(f"$SRV.INFO.{subjects.ASR_SERVICE}", b"", timeout=2)
    info = json.loads(reply.data)
    assert info["name"] == subjects.ASR_SERVICE
    assert info["metadata"]["backend"] == "light"
    assert "whisper-base" in info["metadata"]["models"].split(",")
    stats = json.loads((await bus.nc.request(f"$SRV.STATS.{subjects.ASR_SERVICE}", b"")).data)
    assert stats["endpoints"][0]["data"]["capacity"] >= 1
    engine = bus.directory.engines()[0]
    assert engine.backend == "light" and engine.device == "cpu" and engine.capacity >= 10


async def test_one_shot_over_256_kib_is_chunked(bus: Bus) -> None:
    """12 s of audio (384 KB) travels in bus-sized messages and comes back as segments."""
    names = ["en_fox.wav", "en_meeting.wav", "en_fox.wav"]
    pcm = b"".join(read_pcm(n) + silence(800) for n in names)
    assert len(pcm) > subjects.MAX_PAYLOAD
    transcript = await bus.recognize(pcm, AsrParams(language="en"))
    expected = " ".join(clip(n)["text"] for n in names)
    assert wer(expected, transcript.text) <= 0.2, transcript.text
    times = [(s.begin_ms, s.time_ms) for s in transcript.segments]
    assert times == sorted(times) and all(b <= e for b, e in times)
    assert abs(transcript.duration_ms - len(pcm) // 32) <= 1
    assert times[-1][1] <= transcript.duration_ms + 100


async def test_streaming_session_events(bus: Bus) -> None:
    session = await bus.open_asr(AsrParams(language="en", enable_intermediate_result=True))
    pcm = read_pcm("en_two_sentences.wav") + silence(1000)
    for pos in range(0, len(pcm), 3200):
        await session.send(pcm[pos : pos + 3200])
    await session.stop()
    events = [e async for e in session]
    assert events[-1].type == "completed"
    ends = [e for e in events if e.type == "end"]
    assert [e.index for e in ends] == [1, 2]
    for end, expected in zip(ends, clip("en_two_sentences.wav")["sentences"], strict=True):
        assert wer(expected, end.text) <= 0.2, end.text


async def test_unknown_model_is_refused(bus: Bus) -> None:
    with pytest.raises(BusError) as err:
        await bus.open_asr(AsrParams(model="no-such-model"))
    assert err.value.code == 40000003
    assert "whisper-base" in err.value.message
