"""The NLS WebSocket gateway, driven by the official NLS Python SDK and by raw aiohttp frames,
through a real bridge, a real nats-server and a real engine on the light Whisper backend."""

from __future__ import annotations

import asyncio
import io
import json
import re
import uuid
import wave
from typing import Any

import aiohttp
import numpy as np
import pytest

from tests.conftest import BridgeProcess
from tests.nls_client import SdkRun, clip, read_pcm, recognize, silence, transcribe
from tests.textmetrics import cer, wer

WER_MAX = 0.2
CER_MAX = 0.3


def check_order(run: SdkRun) -> None:
    """Started first, Completed last, per sentence Begin < partials < End, times consistent."""
    names = run.names()
    assert names[0] == "TranscriptionStarted", names
    assert names[-1] == "TranscriptionCompleted", names
    task_ids = {h["task_id"] for _, _, h in run.events}
    assert len(task_ids) == 1 and re.fullmatch(r"[0-9a-f]{32}", task_ids.pop())
    open_index, last_end = None, -1
    for name, payload, header in run.events[1:-1]:
        assert header["status"] == 20000000 and header["namespace"] == "SpeechTranscriber"
        if name == "SentenceBegin":
            assert open_index is None
            open_index = payload["index"]
            assert payload["time"] >= last_end
        elif name == "TranscriptionResultChanged":
            assert payload["index"] == open_index and payload["result"]
        elif name == "SentenceEnd":
            assert payload["index"] == open_index
            assert last_end <= payload["begin_time"] <= payload["time"]
            assert 0.0 <= payload["confidence"] <= 1.0
            last_end, open_index = payload["time"], None
        else:
            pytest.fail(f"unexpected event {name}")
    assert open_index is None


def text_of(run: SdkRun) -> str:
    return " ".join(p["result"] for p in run.payloads("SentenceEnd"))


def test_english_two_sentences_with_partials(bridge: BridgeProcess) -> None:
    c = clip("en_two_sentences.wav")
    pcm = read_pcm(c["file"]) + silence(1000)
    run = transcribe(
        f"{bridge.ws_url}/ws/v1",
        pcm,
        paced=True,
        enable_intermediate_result=True,
        enable_punctuation_prediction=True,
    )
    assert run.failure() is None, run.failure()
    check_order(run)
    ends = run.payloads("SentenceEnd")
    assert len(ends) == 2, ends
    for end, expected in zip(ends, c["sentences"], strict=True):
        assert wer(expected, end["result"]) <= WER_MAX, (expected, end["result"])
    assert run.payloads("TranscriptionResultChanged"), "no partial results"
    assert run.payloads("TranscriptionStarted")[0]["session_id"]


def test_mandarin(bridge: BridgeProcess) -> None:
    c = clip("zh_weather.wav")
    run = transcribe(f"{bridge.ws_url}/ws/v1/asr", read_pcm(c["file"]) + silence(800))
    assert run.failure() is None, run.failure()
    check_order(run)
    assert cer(c["text"], text_of(run)) <= CER_MAX, text_of(run)


def test_8khz_is_resampled(bridge: BridgeProcess) -> None:
    c = clip("en_fox.wav")
    run = transcribe(f"{bridge.ws_url}/ws/v1", read_pcm(c["file"], 8000), sample_rate=8000)
    check_order(run)
    assert wer(c["text"], text_of(run)) <= WER_MAX, text_of(run)


def test_wav_stream_with_one_header(bridge: BridgeProcess) -> None:
    c = clip("en_meeting.wav")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(read_pcm(c["file"]))
    run = transcribe(f"{bridge.ws_url}/ws/v1", buf.getvalue(), aformat="wav")
    check_order(run)
    assert wer(c["text"], text_of(run)) <= WER_MAX, text_of(run)


def test_tail_is_flushed_on_stop(bridge: BridgeProcess) -> None:
    """Stop right after the last word, with no trailing silence: nothing may be lost."""
    c = clip("en_fox.wav")
    audio = np.frombuffer(read_pcm(c["file"]), dtype="<i2")
    loud = np.flatnonzero(np.abs(audio) > 500)
    pcm = audio[: loud[-1] + 1].tobytes()
    run = transcribe(f"{bridge.ws_url}/ws/v1", pcm, chunk_ms=40)
    check_order(run)
    text = text_of(run)
    assert wer(c["text"], text) <= WER_MAX, text
    assert "bank" in text.lower(), text


def test_words_and_confidence(bridge: BridgeProcess) -> None:
    c = clip("en_fox.wav")
    run = transcribe(f"{bridge.ws_url}/ws/v1", read_pcm(c["file"]), ex={"enable_words": True})
    check_order(run)
    for end in run.payloads("SentenceEnd"):
        assert end["words"], end
        for word in end["words"]:
            assert (
                end["begin_time"] - 100 <= word["startTime"] <= word["endTime"] <= end["time"] + 100
            )


def test_control_transcriber(bridge: BridgeProcess) -> None:
    """ControlTranscriber is accepted mid-session (FunSpeech refused it)."""
    import nls

    run = SdkRun()
    tr = nls.NlsSpeechTranscriber(
        url=f"{bridge.ws_url}/ws/v1",
        token="test-token-123",
        appkey="test-appkey",
        on_start=run.on,
        on_sentence_end=run.on,
        on_completed=run.on,
        on_error=run.on,
        on_close=run.on_close,
    )
    tr.start(timeout=10)
    tr.ctrl(max_sentence_silence=2000)
    pcm = read_pcm("en_fox.wav")
    for pos in range(0, len(pcm), 3200):
        tr.send_audio(pcm[pos : pos + 3200])
    tr.stop(timeout=60)
    run.closed.wait(5)
    assert run.failure() is None, run.failure()
    assert run.names()[-1] == "TranscriptionCompleted"
    assert wer(clip("en_fox.wav")["text"], text_of(run)) <= WER_MAX


def test_recognizer_one_sentence(bridge: BridgeProcess) -> None:
    c = clip("en_meeting.wav")
    run = recognize(f"{bridge.ws_url}/ws/v1", read_pcm(c["file"]), enable_intermediate_result=True)
    names = run.names()
    assert names[0] == "RecognitionStarted" and names[-1] == "RecognitionCompleted", names
    assert wer(c["text"], run.payloads("RecognitionCompleted")[0]["result"]) <= WER_MAX


def test_recognizer_voice_detection_ends_at_first_sentence(bridge: BridgeProcess) -> None:
    c = clip("en_two_sentences.wav")
    pcm = read_pcm(c["file"]) + silence(1000)
    run = recognize(f"{bridge.ws_url}/ws/v1", pcm, ex={"enable_voice_detection": True})
    assert run.names()[-1] == "RecognitionCompleted", run.names()
    result = run.payloads("RecognitionCompleted")[0]["result"]
    assert wer(c["sentences"][0], result) <= WER_MAX, result


# ---- bad input: a clear TaskFailed, the connection closed, the service still serving


def frame(namespace: str, name: str, task_id: str, payload: dict[str, Any] | None = None) -> str:
    header = {"message_id": uuid.uuid4().hex, "task_id": task_id, "namespace": namespace}
    header |= {"name": name, "appkey": "test-appkey"}
    return json.dumps({"header": header, "payload": payload or {}})


async def failure_of(url: str, *sends: str | bytes, headers: dict[str, str] | None = None) -> dict:
    """Send frames; return the TaskFailed header; assert the server then closes."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=headers) as ws:
        for item in sends:
            if isinstance(item, bytes):
                await ws.send_bytes(item)
            else:
                await ws.send_str(item)
        failed = None
        async with asyncio.timeout(15):
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    header = json.loads(msg.data)["header"]
                    if header["name"] == "TaskFailed":
                        failed = header
        assert ws.closed
    assert failed is not None, "no TaskFailed"
    return failed


START = "StartTranscription"
NS = "SpeechTranscriber"


@pytest.mark.parametrize(
    ("sends", "code", "text"),
    [
        (["{not json"], 40000002, "Not Json"),
        ([frame("NoSuchThing", START, "a" * 32)], 40000002, "Invalid namespace"),
        ([frame(NS, "Dance", "a" * 32)], 40000002, "Invalid message name"),
        ([b"\x00\x01" * 800], 40000002, "not started"),
        ([frame(NS, "StopTranscription", "a" * 32)], 40000002, "not started"),
        ([frame(NS, START, "a" * 32, {"sample_rate": 44100})], 41010101, "sample_rate"),
        ([frame(NS, START, "a" * 32, {"format": "opus"})], 40000003, "format"),
        ([frame(NS, START, "a" * 32, {"max_sentence_silence": 50})], 40000003, "max_sentence"),
        ([frame(NS, START, "a" * 32), frame(NS, START, "a" * 32)], 40000002, "already started"),
        (
            [frame(NS, START, "a" * 32), frame(NS, "StopTranscription", "b" * 32)],
            40000002,
            "Task ID",
        ),
    ],
)
async def test_bad_input_gets_task_failed(
    bridge: BridgeProcess, sends: list[str | bytes], code: int, text: str
) -> None:
    failed = await failure_of(f"{bridge.ws_url}/ws/v1", *sends)
    assert failed["status"] == code, failed
    assert text.lower() in failed["status_text"].lower(), failed
    # and the service keeps serving
    good = transcribe(f"{bridge.ws_url}/ws/v1", read_pcm("en_fox.wav")[:32000])
    assert good.names()[-1] == "TranscriptionCompleted"


async def test_task_id_is_echoed(bridge: BridgeProcess) -> None:
    task_id = uuid.uuid4().hex
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{bridge.ws_url}/ws/v1") as ws:
        await ws.send_str(frame(NS, START, task_id))
        started = json.loads((await ws.receive(timeout=10)).data)
        await ws.send_bytes(read_pcm("en_fox.wav"))
        await ws.send_str(frame(NS, "StopTranscription", task_id))
        headers = [started["header"]]
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                headers.append(json.loads(msg.data)["header"])
    assert {h["task_id"] for h in headers} == {task_id}
    assert headers[-1]["name"] == "TranscriptionCompleted"
    assert ws.close_code == 1000


@pytest.fixture(scope="module")
def strict_bridge(nats_url, light_engine, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A bridge with auth on and a short idle timeout."""
    proc = BridgeProcess(
        nats_url,
        tmp_path_factory.mktemp("strict"),
        APPTOKEN="secret-token-0123",
        APPKEY="my-appkey",
        ASR_IDLE_TIMEOUT="1.5",
    ).start()
    yield proc
    proc.stop()


async def test_idle_session_ends_with_40000004(strict_bridge: BridgeProcess) -> None:
    url = f"{strict_bridge.ws_url}/ws/v1?token=secret-token-0123"
    start = frame(NS, START, "c" * 32).replace("test-appkey", "my-appkey")
    failed = await failure_of(url, start, b"\x00" * 3200)
    assert failed["status"] == 40000004, failed


@pytest.mark.parametrize(
    ("query", "headers", "appkey"),
    [
        ("", None, "my-appkey"),
        ("?token=wrong-token-000", None, "my-appkey"),
        ("", {"X-NLS-Token": "wrong-token-000"}, "my-appkey"),
        ("?token=secret-token-0123", None, "wrong-key"),
    ],
)
async def test_auth_refused(
    strict_bridge: BridgeProcess, query: str, headers: dict[str, str] | None, appkey: str
) -> None:
    start = frame(NS, START, "d" * 32).replace("test-appkey", appkey)
    failed = await failure_of(f"{strict_bridge.ws_url}/ws/v1{query}", start, headers=headers)
    assert failed["status"] == 40000001, failed
    assert "ACCESS_DENIED" in failed["status_text"]
    # the TaskFailed answers the client's Start: its task_id and namespace (issue 8 item 7)
    assert (failed["task_id"], failed["namespace"]) == ("d" * 32, NS), failed


async def test_refused_client_that_sends_nothing_still_hears_why(
    strict_bridge: BridgeProcess,
) -> None:
    loop = asyncio.get_running_loop()
    opened = loop.time()
    failed = await failure_of(f"{strict_bridge.ws_url}/ws/v1?token=wrong-token-000")
    assert failed["status"] == 40000001 and failed["task_id"] == "", failed
    assert loop.time() - opened <= 2.0 + 2.0  # the server waits 2 s for a first frame


def test_auth_accepted_by_header_and_query(strict_bridge: BridgeProcess) -> None:
    pcm = read_pcm("en_fox.wav")[:32000]
    for url in (
        f"{strict_bridge.ws_url}/ws/v1",
        f"{strict_bridge.ws_url}/ws/v1?token=secret-token-0123",
    ):
        run = transcribe(url, pcm, token="secret-token-0123", appkey="my-appkey")
        assert run.names()[-1] == "TranscriptionCompleted", run.events


# ---- idle: only audio counts, pings don't (issue 8 item 2)
IDLE_S = 1.5  # strict_bridge's ASR_IDLE_TIMEOUT
IDLE_BOUND_S = IDLE_S + 3.0


async def pinged_failure(url: str, *sends: str) -> tuple[dict, float]:
    """Send frames, then only ping every 0.4 s; the TaskFailed header and its delay."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url, autoping=True) as ws:
        for item in sends:
            await ws.send_str(item)
        loop = asyncio.get_running_loop()
        sent = loop.time()

        async def ping() -> None:
            while not ws.closed:
                await ws.ping()
                await asyncio.sleep(0.4)  # the client's ping cadence

        pinger = asyncio.create_task(ping())
        try:
            async with asyncio.timeout(IDLE_BOUND_S):
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        header = json.loads(msg.data)["header"]
                        if header["name"] == "TaskFailed":
                            return header, loop.time() - sent
        finally:
            pinger.cancel()
    pytest.fail("closed without TaskFailed")


@pytest.mark.parametrize("started", [False, True], ids=["before-start", "after-start"])
async def test_pings_do_not_keep_an_idle_session(
    strict_bridge: BridgeProcess, started: bool
) -> None:
    url = f"{strict_bridge.ws_url}/ws/v1?token=secret-token-0123"
    start = frame(NS, START, "e" * 32).replace("test-appkey", "my-appkey")
    failed, after = await pinged_failure(url, *([start] if started else []))
    assert failed["status"] == 40000004, failed
    assert IDLE_S - 0.2 <= after <= IDLE_BOUND_S, after


def test_sdk_pings_do_not_keep_an_idle_session(strict_bridge: BridgeProcess) -> None:
    """The official SDK pings every second (ping_interval=1) and sends no audio."""
    import nls

    run = SdkRun()
    tr = nls.NlsSpeechTranscriber(
        url=f"{strict_bridge.ws_url}/ws/v1",
        token="secret-token-0123",
        appkey="my-appkey",
        on_start=run.on,
        on_error=run.on,
        on_close=run.on_close,
    )
    tr.start(timeout=10, ping_interval=1)
    assert run.closed.wait(IDLE_BOUND_S), run.events
    failure = run.failure()
    assert failure is not None and failure["status"] == 40000004, run.events
    tr.shutdown()


async def test_start_and_control_read_values_alike(bridge: BridgeProcess) -> None:
    """Numbers as strings and "" for false, in Start and in ControlTranscriber alike."""
    task_id = uuid.uuid4().hex
    start = {"max_sentence_silence": "800", "sample_rate": "16000", "enable_words": ""}
    control = {"max_sentence_silence": "2000", "enable_intermediate_result": "false"}
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{bridge.ws_url}/ws/v1") as ws:
        await ws.send_str(frame(NS, START, task_id, start))
        started = json.loads((await ws.receive(timeout=10)).data)["header"]
        assert started["name"] == "TranscriptionStarted", started
        await ws.send_str(frame(NS, "ControlTranscriber", task_id, control))
        await ws.send_bytes(read_pcm("en_fox.wav"))
        await ws.send_str(frame(NS, "StopTranscription", task_id))
        events = []
        async with asyncio.timeout(60):
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    events.append(json.loads(msg.data))
    names = [e["header"]["name"] for e in events]
    assert names[-1] == "TranscriptionCompleted", events[-1]
    ends = [e["payload"] for e in events if e["header"]["name"] == "SentenceEnd"]
    assert ends and all("words" not in end for end in ends), ends
