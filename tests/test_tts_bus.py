"""Speech synthesis through the bus alone, with real TTS engine processes (light backend)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import time
from pathlib import Path

import av
import nats
import numpy as np
import pytest

from bus.client import Bus, BusError, TtsMessage
from bus.schemas import AsrParams, TtsParams
from bus.subjects import DEFAULT as SUBJECTS
from bus.voices import VoiceStore
from tests.harness import EngineProcess, check_malformed_opens
from tests.textmetrics import cer, wer

EN = "The quick brown fox jumps over the lazy dog. It was a sunny day by the river."
ZH = "今天天气很好。我们去公园散步吧。"


@pytest.fixture
async def bus(nats_url: str, tts_engine: EngineProcess) -> Bus:
    client = await Bus.connect(nats_url)
    await client.directory.wait_for(1, 60, task="tts")
    yield client
    await client.close()


async def collect(bus: Bus, text: str, params: TtsParams) -> list[TtsMessage]:
    return [m async for m in bus.synthesize(text, params)]


def audio_of(messages: list[TtsMessage]) -> bytes:
    return b"".join(m.audio for m in messages if m.kind == "audio")


def check_order(messages: list[TtsMessage], duration_ms: float) -> list[TtsMessage]:
    """started, then per sentence begin .. audio .. end with growing times, then completed."""
    kinds = [m.kind for m in messages]
    assert kinds[0] == "started" and kinds[-1] == "completed", kinds
    ends = [m.event for m in messages if m.kind == "sentence_end"]
    begins = [m.event for m in messages if m.kind == "sentence_begin"]
    assert [e.index for e in begins] == [e.index for e in ends] == list(range(1, len(ends) + 1))
    last = 0
    for end in ends:
        assert last <= end.begin_ms <= end.end_ms <= duration_ms + 50, (end, duration_ms)
        last = end.end_ms
    assert abs(messages[-1].event.duration_ms - duration_ms) < 50
    return ends


async def test_engine_is_a_micro_service_with_its_voices(bus: Bus) -> None:
    name = SUBJECTS.service("tts")
    info = json.loads((await bus.nc.request(f"$SRV.INFO.{name}", b"", timeout=2)).data)
    assert info["name"] == "funspeech-tts" and info["metadata"]["backend"] == "light"
    endpoints = {e["subject"]: e["queue_group"] for e in info["endpoints"]}
    assert endpoints["fs.v1.tts.synthesize"] == endpoints["fs.v1.tts.open"] == "tts"
    engine = bus.directory.engines("tts")[0]
    names = {v.id for v in engine.voices} | {a for v in engine.voices for a in v.aliases}
    assert {"中文女", "中文男", "英文女", "英文男", "xiaoyun", "alloy"} <= names


@pytest.mark.parametrize(
    ("text", "voice", "sentences"),
    [
        (
            EN,
            "英文男",
            ["The quick brown fox jumps over the lazy dog.", "It was a sunny day by the river."],
        ),
        (ZH, "中文女", ["今天天气很好。", "我们去公园散步吧。"]),
    ],
)
async def test_one_shot_streams_pcm_with_sentence_times(
    bus: Bus, text: str, voice: str, sentences: list[str]
) -> None:
    params = TtsParams(voice=voice, format="pcm", sample_rate=16000)
    messages = await collect(bus, text, params)
    pcm = np.frombuffer(audio_of(messages), dtype="<i2")
    duration_ms = pcm.size / 16
    ends = check_order(messages, duration_ms)
    assert [e.text for e in ends] == sentences
    assert 2000 < duration_ms < 12000 and np.abs(pcm).max() > 1000
    first_audio = next(i for i, m in enumerate(messages) if m.kind == "audio")
    second_begin = [i for i, m in enumerate(messages) if m.kind == "sentence_begin"][1]
    assert first_audio < second_begin, "the first sentence's audio comes before the second"


@pytest.mark.parametrize(("fmt", "rate"), [("wav", 22050), ("mp3", 24000), ("flac", 8000)])
async def test_container_formats_decode(bus: Bus, fmt: str, rate: int) -> None:
    messages = await collect(bus, "Hello there.", TtsParams(voice="alloy", format=fmt,
                                                            sample_rate=rate))  # fmt: skip
    data = audio_of(messages)
    if fmt == "wav":
        assert data.count(b"RIFF") == 1, "one header for the whole stream"
    with av.open(io.BytesIO(data)) as container:  # as a player reads the stream
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        assert stream.rate == rate
    assert 0.4 < samples / rate < 4.0


async def test_round_trip_through_asr(bus: Bus, light_engine: EngineProcess) -> None:
    """Text spoken by the TTS engine and recognised by the ASR engine, both over the bus."""
    await bus.directory.wait_for(1, 60, task="asr")
    for text, voice, language, metric, bound in (
        (EN, "英文男", "en", wer, 0.2),
        (ZH, "中文女", "zh", cer, 0.3),
    ):
        pcm = audio_of(await collect(bus, text, TtsParams(voice=voice, sample_rate=16000)))
        result = await bus.recognize(pcm, AsrParams(language=language))
        assert metric(text, result.text) <= bound, (text, result.text)


async def test_flowing_session_spoken_token_by_token(bus: Bus) -> None:
    session = await bus.open_tts(TtsParams(voice="xiaoyun", format="pcm", sample_rate=24000))
    began = time.monotonic()
    for token in ["我们", "明天", "去", "公园。", "天气", "很好，", "阳光", "明媚。", ""]:
        await session.push(token)
    first = await session.next_message(timeout=30)
    assert first.kind == "started"
    await session.stop()
    messages = [first] + [m async for m in session]
    pcm = np.frombuffer(audio_of(messages), dtype="<i2")
    ends = check_order(messages, pcm.size / 24)
    assert [e.text for e in ends] == ["我们明天去公园。", "天气很好，阳光明媚。"]
    assert time.monotonic() - began < 60


async def test_subtitles_with_word_times(bus: Bus) -> None:
    params = TtsParams(voice="英文女", format="pcm", enable_subtitle=True)
    messages = await collect(bus, "Good morning to you all.", params)
    end = next(m.event for m in messages if m.kind == "sentence_end")
    assert end.words and [w.text.lower() for w in end.words][:2] == ["good", "morning"]
    assert all(end.begin_ms <= w.begin_ms <= w.end_ms <= end.end_ms for w in end.words)


async def test_unknown_voice_and_clone_on_light_are_clear_errors(bus: Bus, nats_url: str) -> None:
    with pytest.raises(BusError) as err:
        await collect(bus, "Hi.", TtsParams(voice="nobody-has-this"))
    assert err.value.code == 40000003 and "/stream/v1/tts/voices" in err.value.message
    store = await VoiceStore.open(bus.nc, SUBJECTS)
    await store.put("my-clone", b"RIFF", text="hello", sample_rate=16000, duration_ms=2000)
    try:
        with pytest.raises(BusError) as err:
            await collect(bus, "Hi.", TtsParams(voice="my-clone"))
        assert err.value.code == 40000003 and "cannot clone" in err.value.message
    finally:
        await store.delete("my-clone")


async def test_plain_nats_json_synthesis(nats_url: str, tts_engine: EngineProcess) -> None:
    """Any NATS client: a JSON request, audio and JSON events on its inbox."""
    nc = await nats.connect(nats_url)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        body = {"text": "Plain clients work too.", "params": {"voice": "alloy", "format": "mp3"}}
        await nc.publish("fs.v1.tts.synthesize", json.dumps(body).encode(), reply=inbox)
        kinds, audio = [], b""
        while not kinds or kinds[-1] not in ("completed", "error"):
            msg = await sub.next_msg(timeout=30)
            kinds.append(msg.headers["Fs-Event"])
            if kinds[-1] == "audio":
                audio += msg.data
            else:
                assert json.loads(msg.data)["type"] == kinds[-1]
        assert kinds[0] == "started" and kinds[-1] == "completed", kinds
        assert audio[:3] == b"ID3" or audio[0] == 0xFF
    finally:
        await nc.close()


async def test_leaving_early_stops_the_synthesis(bus: Bus) -> None:
    """A consumer that leaves before "completed" (aclose) frees the engine's slot at once: the
    engine stops the synthesis, which would otherwise run for minutes (300 sentences)."""
    stream = bus.synthesize(" ".join([EN] * 150), TtsParams(voice="英文女", format="pcm"))
    while (await anext(stream)).kind != "audio":
        pass
    await bus.directory.wait_for(1, 10, task="tts", where=lambda e: e.active == 1)
    left = time.monotonic()
    await stream.aclose()
    await bus.directory.wait_for(1, 10, task="tts", where=lambda e: e.active == 0)
    assert time.monotonic() - left < 5
    assert (await collect(bus, "Still here.", TtsParams(format="pcm")))[-1].kind == "completed"


async def test_full_engine_and_lost_engine(own_nats: str, tmp_path: Path) -> None:
    """One-synthesis engines: the second request is refused at once (40000005); an engine
    killed mid-synthesis fails its request within 3 s; the next one works on the other."""
    engines = [
        EngineProcess(own_nats, tmp_path, task="tts", TTS_MAX_SESSIONS="1").start()
        for _ in range(2)
    ]
    bus = await Bus.connect(own_nats)
    try:
        await bus.directory.wait_for(2, 180, task="tts")
        long = " ".join([EN] * 3)
        params = TtsParams(voice="英文女", format="pcm")
        first, second = bus.synthesize(long, params), bus.synthesize(long, params)
        assert (await anext(first)).kind == "started"
        assert (await anext(second)).kind == "started"
        began = time.monotonic()
        with pytest.raises(BusError) as err:
            await collect(bus, "One more.", params)
        assert err.value.code == 40000005 and time.monotonic() - began < 1.0
        os.kill(bus.directory.engines("tts")[0].pid, signal.SIGKILL)
        killed = time.monotonic()

        async def drain(stream) -> float | None:
            """None when the synthesis completes, else seconds from the kill to its error."""
            try:
                async for _ in stream:
                    pass
            except BusError as exc:
                assert exc.code == 50000000 and "stopped responding" in exc.message
                return time.monotonic() - killed
            return None

        outcomes = await asyncio.gather(drain(first), drain(second))
        failed = [t for t in outcomes if t is not None]
        assert len(failed) == 1 and failed[0] < 3.0, outcomes
        await bus.directory.wait_for(1, 10, task="tts", where=lambda e: e.active == 0)
        messages = await collect(bus, "Still here.", params)
        assert messages[-1].kind == "completed"
    finally:
        await bus.close()
        for engine in engines:
            engine.kill()
        await asyncio.sleep(0)


async def test_malformed_open_is_refused_and_the_engine_serves_on(bus: Bus) -> None:
    await check_malformed_opens(bus.nc, SUBJECTS.entry("tts", "open"))
