"""FunASR end to end: tiny random-weight model directories built at test time, loaded by a real
engine process (ASR_BACKEND=funasr, the same loading code as for real weights), a real bridge
and a real nats-server, driven by the official NLS SDK, plain HTTP and the `openai` client.

The text is noise (random weights) and never asserted, except that a session's results do not
depend on another session running beside it. The event flow, indices and times are asserted.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nls
import numpy as np
import openai
import pytest

from tests.conftest import BridgeProcess, EngineProcess, running_nats, wait_engines
from tests.funasr_tiny import build_tiny_models
from tests.nls_client import read_pcm, silence

GAP_MS = 1500  # pause between utterances: longer than max_sentence_silence (800 ms)
MS = 16  # samples per ms at 16 kHz


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tiny_models(tmp_path_factory.mktemp("funasr_tiny"))


def funasr_env(models: dict[str, Path], cache: Path, **over: str) -> dict[str, str]:
    env = {
        "ASR_BACKEND": "funasr",
        "FUNASR_REALTIME_MODEL": str(models["streaming"]),
        "FUNASR_OFFLINE_MODEL": str(models["offline"]),
        "VAD_MODEL": str(models["vad"]),
        "PUNC_MODEL": str(models["punc"]),
        "MODELSCOPE_PATH": str(cache),  # empty: nothing is found there by accident
        "FUNASR_NCPU": "1",
    }
    return env | over


@pytest.fixture(scope="module")
def module_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A nats-server of this module's own: the FunASR engine is the only engine on it."""
    with running_nats(tmp_path_factory.mktemp("jetstream")) as url:
        yield url


@pytest.fixture(scope="module")
def funasr_engine(
    module_nats: str, tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    logs = tmp_path_factory.mktemp("logs")
    env = funasr_env(tiny_models, tmp_path_factory.mktemp("modelscope"))
    engine = EngineProcess(module_nats, logs, **env).start()
    try:
        wait_engines(module_nats, 1, timeout=90)
    except TimeoutError:
        engine.stop()
        raise RuntimeError(f"FunASR engine did not come up:\n{engine.log()}") from None
    yield engine
    assert engine.stop() == 0, engine.log()
    assert "Traceback" not in engine.log(), engine.log()


@pytest.fixture(scope="module")
def funasr_bridge(
    module_nats: str, funasr_engine: EngineProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BridgeProcess]:
    proc = BridgeProcess(module_nats, tmp_path_factory.mktemp("logs")).start()
    yield proc
    proc.stop()


# ---------------------------------------------------------------- audio


def loud_until(pcm: bytes, fraction: float) -> bytes:
    """The clip cut inside speech: at the first loud 10 ms frame after `fraction` of it."""
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    start = int(len(frames) * fraction)
    loud = start + int(np.flatnonzero(rms[start:] > 1500)[0])
    return pcm[: (loud * 160 + 77) * 2]  # an odd sample count: no chunk boundary lines up


def last_loud_ms(pcm: bytes) -> int:
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    return (int(np.flatnonzero(np.sqrt(np.mean(frames**2, axis=1)) > 1500)[-1]) + 1) * 10


def two_utterances(first: str, second: str) -> tuple[bytes, int, int]:
    """first clip, GAP_MS of silence, then the second clip stopped mid-speech (no trailing
    silence); returns (pcm, ms where the first clip's speech ends, ms where the second clip
    starts)."""
    a = read_pcm(first)
    pcm = a + silence(GAP_MS)
    return pcm + loud_until(read_pcm(second), 0.6), last_loud_ms(a), len(pcm) // 2 // MS


def total_ms(pcm: bytes) -> int:
    return len(pcm) // 2 // MS


def wav_bytes(pcm: bytes) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm)
    return buf.getvalue()


# ---------------------------------------------------------------- the SDK client


class Run:
    """What one SDK SpeechTranscriber session saw: (name, payload, arrival time)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], float]] = []
        self.task_ids: set[str] = set()
        self.closed = threading.Event()
        self.stop_at = 0.0

    def on(self, message: str, *args: object) -> None:
        data = json.loads(message)
        header = data["header"]
        self.task_ids.add(header["task_id"])
        self.events.append((header["name"], data.get("payload") or {}, time.monotonic()))

    def on_close(self, *args: object) -> None:
        self.closed.set()

    def names(self) -> list[str]:
        return [n for n, _, _ in self.events]

    def of(self, name: str) -> list[dict[str, Any]]:
        return [p for n, p, _ in self.events if n == name]

    def arrivals(self, name: str) -> list[float]:
        return [t for n, _, t in self.events if n == name]


def sdk_transcribe(ws_url: str, pcm: bytes, *, paced: bool, **start: Any) -> Run:
    """Stream pcm in 100 ms chunks through the official SDK (paced: in real time)."""
    run = Run()
    tr = nls.NlsSpeechTranscriber(
        url=ws_url,
        token="test-token-123",
        appkey="test-appkey",
        on_start=run.on,
        on_sentence_begin=run.on,
        on_sentence_end=run.on,
        on_result_changed=run.on,
        on_completed=run.on,
        on_error=run.on,
        on_close=run.on_close,
    )
    tr.start(aformat="pcm", sample_rate=16000, timeout=10, **start)
    t0 = time.monotonic()
    for i, pos in enumerate(range(0, len(pcm), 3200)):
        tr.send_audio(pcm[pos : pos + 3200])
        if paced:
            time.sleep(max(0.0, t0 + (i + 1) * 0.1 - time.monotonic()))
    run.stop_at = time.monotonic()
    tr.stop(timeout=60)
    run.closed.wait(5)
    return run


def check_flow(run: Run, audio_ms: int, partials: bool) -> list[dict[str, Any]]:
    """Started first, Completed last; per sentence Begin -> partials -> End with indices
    1, 2, ... and ordered, monotonic times within the audio. Returns the SentenceEnd payloads."""
    names = run.names()
    assert names and names[0] == "TranscriptionStarted", run.events
    assert names[-1] == "TranscriptionCompleted", run.events
    assert len(run.task_ids) == 1
    index, begin, last_end, last_partial = 0, None, 0, 0
    for name, p, _ in run.events[1:-1]:
        if name == "SentenceBegin":
            assert begin is None, "SentenceBegin inside an open sentence"
            index += 1
            assert p["index"] == index
            assert last_end <= p["time"] < audio_ms
            begin, last_partial = p["time"], p["time"]
        elif name == "TranscriptionResultChanged":
            assert partials, "a partial result though enable_intermediate_result is off"
            assert begin is not None and p["index"] == index and p["result"]
            assert last_partial <= p["time"] <= audio_ms  # time = audio decoded so far
            last_partial = p["time"]
        elif name == "SentenceEnd":
            assert begin is not None and p["index"] == index
            assert p["begin_time"] == begin <= p["time"] <= audio_ms
            last_end, begin = p["time"], None
        else:
            pytest.fail(f"unexpected event {name}: {p}")
    assert begin is None, "a sentence was left open"
    return run.of("SentenceEnd")


def check_two_utterances(
    run: Run, pcm: bytes, speech_end: int, second_at: int
) -> list[dict[str, Any]]:
    """The gap ends sentence 1 while audio still flows; Stop flushes the tail of sentence 2."""
    ends = check_flow(run, total_ms(pcm), partials=True)
    assert len(ends) == 2, ends
    assert speech_end - 100 <= ends[0]["time"] < second_at, (speech_end, ends)
    assert ends[1]["begin_time"] >= second_at - 500, ends
    assert ends[1]["time"] == total_ms(pcm), ends  # the tail up to the very last sample
    for i in (1, 2):  # partials while each sentence was spoken
        assert any(p["index"] == i for p in run.of("TranscriptionResultChanged")), i
    return ends


# ---------------------------------------------------------------- realtime, SDK


def test_realtime_partials_sentence_end_and_tail(funasr_bridge: BridgeProcess) -> None:
    pcm, speech_end, second_at = two_utterances("zh_weather.wav", "en_meeting.wav")
    run = sdk_transcribe(
        f"{funasr_bridge.ws_url}/ws/v1",
        pcm,
        paced=True,
        enable_intermediate_result=True,
        enable_punctuation_prediction=True,
    )
    check_two_utterances(run, pcm, speech_end, second_at)
    # sentence 1 ended during the pause, while the client was still sending audio
    first_end_at = run.arrivals("SentenceEnd")[0]
    assert first_end_at < run.stop_at - 1.0
    # partials came while the audio flowed, not in a burst after Stop
    partial_at = run.arrivals("TranscriptionResultChanged")
    assert sum(t < first_end_at for t in partial_at) >= 1
    assert sum(t < run.stop_at for t in partial_at) >= 3
    # Stop -> the flushed last sentence and Completed, promptly
    assert run.arrivals("TranscriptionCompleted")[0] - run.stop_at < 2.0


def test_realtime_without_partials(funasr_bridge: BridgeProcess) -> None:
    pcm, _, _ = two_utterances("en_fox.wav", "zh_music.wav")
    run = sdk_transcribe(f"{funasr_bridge.ws_url}/ws/v1", pcm, paced=False)
    ends = check_flow(run, total_ms(pcm), partials=False)
    assert len(ends) == 2 and ends[1]["time"] == total_ms(pcm), ends
    assert all(e["result"] for e in ends), ends  # the 2-pass decode of each span


def test_two_interleaved_sessions_keep_their_own_caches(funasr_bridge: BridgeProcess) -> None:
    """Two paced SDK sessions at once: each has a coherent flow, and each gets exactly the
    results it gets when it runs alone (so no state leaks between their caches)."""
    url = f"{funasr_bridge.ws_url}/ws/v1"
    audios = [
        two_utterances("zh_weather.wav", "en_meeting.wav"),
        two_utterances("en_fox.wav", "zh_music.wav"),
    ]
    opts = {"enable_intermediate_result": True}
    solo = [sdk_transcribe(url, pcm, paced=False, **opts) for pcm, _, _ in audios]
    runs: list[Run | None] = [None, None]

    def session(i: int) -> None:
        time.sleep(0.25 * i)  # offset: the two clients' chunks interleave
        runs[i] = sdk_transcribe(url, audios[i][0], paced=True, **opts)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None for r in runs)

    def results(run: Run) -> list[tuple[str, int, int, str]]:
        return [
            (n, p["index"], p.get("begin_time", p["time"]), p["result"])
            for n, p, _ in run.events
            if n in ("TranscriptionResultChanged", "SentenceEnd")
        ]

    for run, alone, (pcm, speech_end, second_at) in zip(runs, solo, audios, strict=True):
        assert run is not None
        check_two_utterances(run, pcm, speech_end, second_at)
        assert results(run) == results(alone)
    assert runs[0].task_ids != runs[1].task_ids  # type: ignore[union-attr]


# ---------------------------------------------------------------- one-shot


async def test_rest_one_shot_sentences(funasr_bridge: BridgeProcess) -> None:
    pcm, speech_end, second_at = two_utterances("zh_weather.wav", "en_fox.wav")
    async with aiohttp.ClientSession() as http:
        for vad in ("true", "false"):
            params = {"format": "pcm", "sample_rate": "16000", "enable_voice_detection": vad}
            params |= {"enable_punctuation_prediction": "true", "appkey": "test-appkey"}
            async with http.post(
                f"{funasr_bridge.url}/stream/v1/asr",
                data=pcm,
                params=params,
                headers={"Content-Type": "application/octet-stream", "X-NLS-Token": "t" * 16},
            ) as r:
                body = await r.json()
                assert r.status == 200, body
            assert body["status"] == 20000000 and body["result"], body
            spans = [(s["begin_time"], s["end_time"]) for s in body["sentences"]]
            assert all(s["text"] for s in body["sentences"]), body
            if vad == "false":  # short audio is decoded whole
                assert spans == [(0, total_ms(pcm))], body
                continue
            assert len(spans) == 2, body
            last = 0
            for b, e in spans:
                assert last <= b < e <= total_ms(pcm), spans
                last = e
            assert speech_end - 100 <= spans[0][1] < second_at - 300 <= spans[1][0]


def test_openai_transcription(funasr_bridge: BridgeProcess) -> None:
    pcm, _, _ = two_utterances("en_meeting.wav", "zh_weather.wav")
    client = openai.OpenAI(
        base_url=f"{funasr_bridge.url}/v1", api_key="unused", max_retries=0, timeout=60
    )
    result = client.audio.transcriptions.create(
        file=("speech.wav", wav_bytes(pcm)),
        model="whisper-1",
        response_format="verbose_json",
        timestamp_granularities=["segment"],
    )
    assert result.text
    assert abs(result.duration - total_ms(pcm) / 1000) < 0.05
    last = 0.0
    assert result.segments
    for i, seg in enumerate(result.segments):
        assert seg.id == i and seg.text
        assert last <= seg.start < seg.end <= result.duration + 0.001
        last = seg.end
    models = [m.id for m in client.models.list()]
    assert "paraformer-large" in models, models


# ---------------------------------------------------------------- start-up failures


def failed_start(
    models: dict[str, Path], tmp_path: Path, **over: str
) -> tuple[int | None, str, list[str]]:
    """An engine process started with bad model settings; (exit code, its log, error lines)."""
    cache = tmp_path / "modelscope"
    cache.mkdir(exist_ok=True)
    # nothing listens on this URL: a failing engine must exit before it ever connects
    engine = EngineProcess("nats://127.0.0.1:9", tmp_path, **funasr_env(models, cache, **over))
    engine.start()
    assert engine.proc is not None
    try:
        code = engine.proc.wait(90)
    finally:
        engine.kill()
    log = engine.log()
    return code, log, [line for line in log.splitlines() if " ERROR " in line]


def test_missing_model_dir_exits_with_clear_error(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "models" / "no-such-vad"
    code, log, errors = failed_start(tiny_models, tmp_path, VAD_MODEL=str(missing))
    assert code == 2, log
    assert len(errors) == 1, log
    assert "VAD_MODEL" in errors[0] and str(missing) in errors[0], errors
    assert "Traceback" not in log, log


def test_corrupt_weights_exit_with_clear_error(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "punc"
    shutil.copytree(tiny_models["punc"], bad)
    weights = bad / "model.pt"
    weights.write_bytes(weights.read_bytes()[:500])
    code, log, errors = failed_start(tiny_models, tmp_path, PUNC_MODEL=str(bad))
    assert code == 3, log
    assert len(errors) == 1, log
    assert "PUNC_MODEL" in errors[0] and str(weights) in errors[0], errors
    assert "Traceback" not in log, log


def test_engine_still_serves_after_the_suite(funasr_bridge: BridgeProcess) -> None:
    """The session cleanup left the engine healthy: a short session completes."""

    async def health() -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{funasr_bridge.url}/stream/v1/asr/models") as r,
        ):
            assert r.status == 200
            return await r.json()

    assert "paraformer-large" in json.dumps(asyncio.run(health()))
    run = sdk_transcribe(
        f"{funasr_bridge.ws_url}/ws/v1", read_pcm("en_fox.wav")[:32000], paced=False
    )
    check_flow(run, 1000, partials=False)
