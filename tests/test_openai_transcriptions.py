"""POST /v1/audio/transcriptions and GET /v1/models through the official `openai` client,
against a real bridge, a real nats-server and a real light engine."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import pytest
import soundfile as sf

from tests.conftest import DATA, BridgeProcess
from tests.textmetrics import wer

CLIPS = {c["file"]: c for c in json.loads((DATA / "clips.json").read_text())}
FOX, TWO = DATA / "en_fox.wav", DATA / "en_two_sentences.wav"
MAX_WER = 0.25
TOKEN = "openai-test-token-0123"


def client(bridge: BridgeProcess, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{bridge.url}/v1", api_key=key, max_retries=0, timeout=60)


def transcribe(bridge: BridgeProcess, path=TWO, **kw):  # type: ignore[no-untyped-def]
    with open(path, "rb") as f:
        return client(bridge).audio.transcriptions.create(
            file=f, model=kw.pop("model", "whisper-1"), **kw
        )


def raw_post(url: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    """A request the openai client would not send (aiohttp, outside the client)."""

    async def send() -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.post(url, **kw) as r:
            return r.status, await r.json()

    return asyncio.run(send())


def form(**files: bytes) -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("model", "whisper-1")
    for name, content in files.items():
        data.add_field(name, content, filename="a.wav")
    return data


def test_json_and_text(bridge: BridgeProcess) -> None:
    result = transcribe(bridge, FOX)
    assert wer(CLIPS[FOX.name]["text"], result.text) <= MAX_WER, result.text
    text = transcribe(bridge, FOX, response_format="text")
    assert isinstance(text, str) and wer(CLIPS[FOX.name]["text"], text) <= MAX_WER


def test_verbose_json_segments_and_words(bridge: BridgeProcess) -> None:
    result = transcribe(
        bridge,
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
        language="en",
    )
    duration = sf.info(TWO).duration
    assert result.language == "en"
    assert abs(result.duration - duration) < 0.3
    assert wer(CLIPS[TWO.name]["text"], result.text) <= MAX_WER, result.text
    segments = result.segments
    assert len(segments) >= 2  # the clip has two sentences with 1.5 s between them
    previous_end = 0.0
    for i, seg in enumerate(segments):
        assert seg.id == i and seg.text
        assert previous_end - 0.05 <= seg.start < seg.end <= duration + 0.05
        previous_end = seg.end
    assert segments[1].start >= 3.0  # the second sentence starts after the first and the pause
    words = result.words
    assert len(words) >= 15
    assert all(w.start <= w.end <= duration + 0.05 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)


def _cue_times(text: str, sep: str) -> list[tuple[str, str]]:
    return re.findall(rf"(\d\d:\d\d:\d\d{sep}\d\d\d) --> (\d\d:\d\d:\d\d{sep}\d\d\d)", text)


def _clock(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def test_srt_and_vtt_have_one_cue_per_segment(bridge: BridgeProcess) -> None:
    segments = transcribe(bridge, response_format="verbose_json").segments
    expected = [(s.start, s.end) for s in segments]
    srt = transcribe(bridge, response_format="srt")
    assert _cue_times(srt, ",") == [(_clock(a, ","), _clock(b, ",")) for a, b in expected]
    assert srt.startswith("1\n") and f"\n{len(expected)}\n" in "\n" + srt
    vtt = transcribe(bridge, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n")
    assert _cue_times(vtt, r"\.") == [(_clock(a, "."), _clock(b, ".")) for a, b in expected]


def test_model_aliases_and_local_models(bridge: BridgeProcess) -> None:
    models = [m.id for m in client(bridge).models.list()]
    assert models, "the engine's models are listed"
    for model in ["gpt-4o-transcribe", *models]:
        result = transcribe(bridge, FOX, model=model)
        assert wer(CLIPS[FOX.name]["text"], result.text) <= MAX_WER, (model, result.text)
    # diarized_json: OpenAI's shape; no diarization runs, so one speaker
    result = transcribe(
        bridge, FOX, model="gpt-4o-transcribe-diarize", response_format="diarized_json"
    )
    assert wer(CLIPS[FOX.name]["text"], result.text) <= MAX_WER
    assert result.segments and {s.speaker for s in result.segments} == {"A"}
    assert all(s.start < s.end <= result.duration + 0.05 for s in result.segments)


def test_stream(bridge: BridgeProcess) -> None:
    events = list(transcribe(bridge, stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    done = [e for e in events if e.type == "transcript.text.done"]
    assert len(deltas) >= 2 and len(done) == 1 and events[-1].type == "transcript.text.done"
    assert "".join(deltas) == done[0].text
    assert wer(CLIPS[TWO.name]["text"], done[0].text) <= MAX_WER, done[0].text


def test_bad_requests(bridge: BridgeProcess) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        transcribe(bridge, FOX, response_format="xml")
    assert err.value.status_code == 400 and err.value.param == "response_format"
    with pytest.raises(openai.BadRequestError) as err:
        transcribe(bridge, DATA / "clips.json")
    assert err.value.param == "file" and err.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as err:
        transcribe(bridge, FOX, temperature=5)
    assert err.value.param == "temperature"
    url = f"{bridge.url}/v1/audio/transcriptions"
    status, body = raw_post(url, data=form(x=b"b"))
    assert status == 400 and body["error"]["param"] == "file"
    status, body = raw_post(url, json={"model": "whisper-1"})
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert transcribe(bridge, FOX).text  # still serving


@pytest.fixture(scope="module")
def auth_bridge(
    nats_url: str, light_engine: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BridgeProcess]:
    proc = BridgeProcess(nats_url, tmp_path_factory.mktemp("logs"), APPTOKEN=TOKEN).start()
    yield proc
    proc.stop()


def test_bearer_auth(auth_bridge: BridgeProcess) -> None:
    for key in ("wrong-key-0123456789", TOKEN[:-1]):
        with pytest.raises(openai.AuthenticationError) as err, open(FOX, "rb") as f:
            client(auth_bridge, key).audio.transcriptions.create(file=f, model="whisper-1")
        assert err.value.status_code == 401
        body = err.value.body
        assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
        assert err.value.code == "invalid_api_key" and TOKEN not in body["message"]
        with pytest.raises(openai.AuthenticationError):
            client(auth_bridge, key).models.list()
    status, body = raw_post(f"{auth_bridge.url}/v1/audio/transcriptions", data=form(file=b"b"))
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    with open(FOX, "rb") as f:
        result = client(auth_bridge, TOKEN).audio.transcriptions.create(file=f, model="whisper-1")
    assert wer(CLIPS[FOX.name]["text"], result.text) <= MAX_WER
