"""Schemathesis hooks for tests/test_openapi.py (SCHEMATHESIS_HOOKS=tests.schemathesis_hooks).

What a schema cannot say is supplied here, so that schema-valid requests are valid:
- audio bodies and uploads are real audio (cuts of an English test clip), not random bytes;
- a schema-valid `audio_address` points at audio the test serves;
- rules across parameters: `language` and its alias `dolphin_lang_sym` must agree, and a case
  that declares a language other than the clip's is left out (a model that does not speak it
  answers 400; one that does decodes the English clip as, say, Afrikaans and Whisper then
  loops on invented text for many seconds);
- speech synthesis names a voice that exists (a string is any voice name to the schema, the
  engines know a few), gives no style instruction to a preset voice (only cloned voices of a
  cloning engine follow one), and a clone prompt is 1-30 s of real speech.
And a plain HTTP client must not reuse a connection that was upgraded to a WebSocket.
"""

from __future__ import annotations

import io
import json
import os
import re
import wave
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import strategies as st
from requests.adapters import HTTPAdapter

SPEECH = Path(__file__).resolve().parent / "data" / "en_fox.wav"  # 16 kHz mono, English
SPOKEN = "en"
AUDIO_URL = os.environ.get("FUNSPEECH_TEST_AUDIO_URL", "")
LANGUAGES = set(json.loads(os.environ.get("FUNSPEECH_TEST_LANGUAGES", "[]")))
ASYNC_TASK = os.environ.get("FUNSPEECH_TEST_ASYNC_TASK", "")  # a finished wav job
URL = re.compile(r"^https?://[^/?#\s]+", re.IGNORECASE)


def speech(start_ms: int, length_ms: int) -> bytes:
    """A cut of the clip as a WAV file."""
    with wave.open(str(SPEECH)) as w:
        rate = w.getframerate()
        w.setpos(min(w.getnframes() - 1, rate * start_ms // 1000))
        frames = w.readframes(rate * length_ms // 1000)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)
    return buf.getvalue()


schemathesis.openapi.media_type(
    "application/octet-stream",
    st.builds(speech, st.integers(0, 3000), st.integers(100, 800)),
)


def _languages_fit(fields: dict[str, Any], *names: str) -> bool:
    """Valid languages (the live engines') other than the clip's are left out; invalid ones
    stay, for the negative cases."""
    given = {str(fields[n]) for n in names if fields.get(n)}
    return not (given & LANGUAGES - {SPOKEN}) and len(given) <= 1


MAX_INSTRUCTION = 500
PRESET = "中文女"  # a preset of every TTS engine (its NLS alias xiaoyun is the default voice)


def _speakable(fields: dict[str, Any], voice: str, instruction: str, value: Any) -> None:
    """A valid voice becomes one that exists; presets take no instruction."""
    if isinstance(fields.get(voice), str) and fields[voice].strip():
        fields[voice] = value
    elif isinstance(fields.get(voice), dict) and isinstance(fields[voice].get("id"), str):
        fields[voice] = {"id": value}
    elif voice in fields:
        return  # an invalid voice: keep the case invalid
    if isinstance(fields.get(instruction), str) and len(fields[instruction]) <= MAX_INSTRUCTION:
        del fields[instruction]  # (an invalid one stays: the case stays invalid)


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    query = case.query
    if isinstance(query, dict) and URL.match(str(query.get("audio_address", ""))):
        query["audio_address"] = AUDIO_URL
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return case  # a negative case stays as generated: its invalid part must reach us
    path, body = case.operation.path, case.body if isinstance(case.body, dict) else {}
    if path == "/rest/v1/tts/async/audio/{file}" and ASYNC_TASK:
        case.path_parameters = {"file": f"{ASYNC_TASK}.wav"}  # a job that exists
    elif path == "/rest/v1/tts/async" and case.method == "GET" and ASYNC_TASK and query:
        query["task_id"] = ASYNC_TASK
    if path == "/stream/v1/tts":
        _speakable(query if isinstance(query, dict) else {}, "voice", "prompt", PRESET)
        _speakable(body, "voice", "prompt", PRESET)
    elif path == "/v1/audio/speech":
        _speakable(body, "voice", "instructions", "alloy")
    elif path == "/stream/v1/tts/voices":
        if isinstance(body.get("audio"), bytes):
            body["audio"] = speech(0, 2500)  # a prompt is 1-30 s
        if body.get("name") == "":  # schemathesis fills required fields beside a custom-
            body["name"] = "hooked voice"  # strategy part with "" and calls that valid
    return case


@schemathesis.hook
def filter_case(context: schemathesis.HookContext, case: schemathesis.Case) -> bool:
    query = case.query if isinstance(case.query, dict) else {}
    body = case.body if isinstance(case.body, dict) else {}
    return _languages_fit(query, "language", "dolphin_lang_sym") and _languages_fit(
        body, "language"
    )


def _build_response(self: HTTPAdapter, req: Any, resp: Any) -> Any:
    """After `101 Switching Protocols` the connection speaks WebSocket: close it rather than
    let requests send the next HTTP request on it."""
    response = _plain_build_response(self, req, resp)
    if resp.status == 101 and resp.connection is not None:
        resp.connection.close()
    return response


_plain_build_response, HTTPAdapter.build_response = HTTPAdapter.build_response, _build_response
