"""OpenAI transcription bodies: json, text, srt, vtt, verbose_json, diarized_json and the
server-sent events of `stream=true`. Segment and word times are the engine's own, so srt/vtt
get one cue per recognised sentence."""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from bridge.envelope import dumps
from bridge.errors import NlsError, openai_error
from bus.schemas import AsrEvent, AsrParams, Recognition
from bus.text import join_texts


def _clock(ms: int, sep: str) -> str:
    hours, rest = divmod(max(ms, 0), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{sep}{rest % 1000:03d}"


def _cues(t: Recognition) -> list[tuple[int, int, str]]:
    return [(s.begin_ms, s.time_ms, s.text.strip()) for s in t.segments if s.text.strip()]


def srt(t: Recognition) -> str:
    return "".join(
        f"{i}\n{_clock(b, ',')} --> {_clock(e, ',')}\n{text}\n\n"
        for i, (b, e, text) in enumerate(_cues(t), start=1)
    )


def vtt(t: Recognition) -> str:
    cues = "".join(f"{_clock(b, '.')} --> {_clock(e, '.')}\n{x}\n\n" for b, e, x in _cues(t))
    return "WEBVTT\n\n" + cues


def _usage(t: Recognition) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(t.duration_ms / 1000)}


def verbose(t: Recognition, params: AsrParams, words: bool) -> dict[str, Any]:
    segments = []
    for i, s in enumerate(t.segments):
        logprob = math.log(s.confidence) if s.confidence else 0.0
        segments.append(
            {
                "id": i,
                "seek": 0,
                "start": s.begin_ms / 1000,
                "end": s.time_ms / 1000,
                "text": s.text.strip(),
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": round(logprob, 4),
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
            }
        )
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": params.language or "unknown",
        "duration": t.duration_ms / 1000,
        "text": join_texts(s.text for s in t.segments),
        "segments": segments,
        "usage": _usage(t),
    }
    if words:
        body["words"] = [
            {"word": w.text.strip(), "start": w.begin_ms / 1000, "end": w.end_ms / 1000}
            for s in t.segments
            for w in s.words or []
        ]
    return body


def diarized(t: Recognition) -> dict[str, Any]:
    """No diarization runs: every segment is labelled speaker "A" (documented)."""
    segments = [
        {
            "type": "transcript.text.segment",
            "id": f"seg_{i}",
            "start": b / 1000,
            "end": e / 1000,
            "text": text,
            "speaker": "A",
        }
        for i, (b, e, text) in enumerate(_cues(t))
    ]
    text = join_texts(s.text for s in t.segments)
    body = {"task": "transcribe", "duration": t.duration_ms / 1000, "text": text}
    return {**body, "segments": segments, "usage": _usage(t)}


MEDIA_TYPES = {"text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}


def render(t: Recognition, fmt: str, params: AsrParams, words: bool, rid: str) -> web.Response:
    headers = {"X-Request-ID": rid}
    if fmt in MEDIA_TYPES:
        if fmt == "srt":
            text = srt(t)
        elif fmt == "vtt":
            text = vtt(t)
        else:
            text = join_texts(s.text for s in t.segments)
        return web.Response(text=text, content_type=MEDIA_TYPES[fmt], headers=headers)
    if fmt == "verbose_json":
        data = verbose(t, params, words)
    elif fmt == "diarized_json":
        data = diarized(t)
    else:
        data = {"text": join_texts(s.text for s in t.segments), "usage": _usage(t)}
    return web.json_response(data, headers=headers, dumps=dumps)


# ---- streaming (SSE)
async def sse(response: web.StreamResponse, data: dict[str, Any], event: str | None = None) -> None:
    head = f"event: {event}\n" if event else ""
    await response.write(f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n".encode())


async def stream_event(response: web.StreamResponse, event: AsrEvent, texts: list[str]) -> None:
    """transcript.text.delta per recognised sentence, transcript.text.done, or an error."""
    if event.type == "end":
        before = join_texts(texts)
        texts.append(event.text)
        delta = join_texts(texts)[len(before) :]
        if delta:
            await sse(response, {"type": "transcript.text.delta", "delta": delta})
    elif event.type == "completed":
        usage = {"type": "duration", "seconds": math.ceil(event.duration_ms / 1000)}
        done = {"type": "transcript.text.done", "text": join_texts(texts), "usage": usage}
        await sse(response, done)
    elif event.type == "error":
        await sse(response, {"error": openai_error(NlsError(event.code, event.message))}, "error")
