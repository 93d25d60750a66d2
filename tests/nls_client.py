"""Test helpers: drive the bridge with the official NLS Python SDK and read test clips."""

from __future__ import annotations

import json
import threading
import time
import wave
from pathlib import Path
from typing import Any

import nls
import numpy as np
import soxr

DATA = Path(__file__).resolve().parent / "data"
CLIPS: list[dict[str, Any]] = json.loads((DATA / "clips.json").read_text())


def clip(name: str) -> dict[str, Any]:
    return next(c for c in CLIPS if c["file"] == name)


def read_pcm(name: str, rate: int = 16000) -> bytes:
    """A clip as s16le mono PCM at `rate`."""
    with wave.open(str(DATA / name)) as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        src = w.getframerate()
    if src != rate:
        audio = soxr.resample(audio.astype(np.float32), src, rate).clip(-32768, 32767)
        audio = audio.astype("<i2")
    return audio.tobytes()


def silence(ms: int, rate: int = 16000) -> bytes:
    return bytes(2 * rate * ms // 1000)


class SdkRun:
    """Events an SDK client received, in order, as (name, payload, header)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        self.closed = threading.Event()

    def on(self, message: str, *args: object) -> None:
        data = json.loads(message)
        header = data["header"]
        self.events.append((header["name"], data.get("payload") or {}, header))

    def on_close(self, *args: object) -> None:
        self.closed.set()

    def names(self) -> list[str]:
        return [n for n, _, _ in self.events]

    def payloads(self, name: str) -> list[dict[str, Any]]:
        return [p for n, p, _ in self.events if n == name]

    def failure(self) -> dict[str, Any] | None:
        return next((h for n, _, h in self.events if n == "TaskFailed"), None)


def transcribe(
    ws_url: str,
    pcm: bytes,
    *,
    sample_rate: int = 16000,
    chunk_ms: int = 100,
    paced: bool = False,
    aformat: str = "pcm",
    token: str = "test-token-123",
    appkey: str = "test-appkey",
    stop_timeout: int = 60,
    **start: Any,
) -> SdkRun:
    """Stream `pcm` through SpeechTranscriber; return every event the SDK saw."""
    run = SdkRun()
    tr = nls.NlsSpeechTranscriber(
        url=ws_url,
        token=token,
        appkey=appkey,
        on_start=run.on,
        on_sentence_begin=run.on,
        on_sentence_end=run.on,
        on_result_changed=run.on,
        on_completed=run.on,
        on_error=run.on,
        on_close=run.on_close,
    )
    tr.start(aformat=aformat, sample_rate=sample_rate, timeout=10, **start)
    if run.failure():
        return run
    step = 2 * sample_rate * chunk_ms // 1000
    for pos in range(0, len(pcm), step):
        tr.send_audio(pcm[pos : pos + step])
        if paced:
            time.sleep(chunk_ms / 1000)
    tr.stop(timeout=stop_timeout)
    run.closed.wait(5)
    return run


def recognize(
    ws_url: str,
    pcm: bytes,
    *,
    sample_rate: int = 16000,
    chunk_ms: int = 100,
    **start: Any,
) -> SdkRun:
    """Send `pcm` through SpeechRecognizer (one sentence)."""
    run = SdkRun()
    rec = nls.NlsSpeechRecognizer(
        url=ws_url,
        token="test-token-123",
        appkey="test-appkey",
        on_start=run.on,
        on_result_changed=run.on,
        on_completed=run.on,
        on_error=run.on,
        on_close=run.on_close,
    )
    rec.start(aformat="pcm", sample_rate=sample_rate, timeout=10, **start)
    step = 2 * sample_rate * chunk_ms // 1000
    for pos in range(0, len(pcm), step):
        if run.closed.is_set():
            break
        rec.send_audio(pcm[pos : pos + step])
    if not run.closed.is_set():
        rec.stop(timeout=60)
    run.closed.wait(5)
    return run
