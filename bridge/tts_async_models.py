"""Async long-text TTS (NLS "长文本语音合成" RESTful): the request and answer shapes.

Requests are validated with these models (lax as every NLS parameter: unknown keys ignored,
numbers as strings, blank = default) and the OpenAPI document is generated from them. Answers
are NLS's: `{status, error_code, error_message, request_id, data}` on success and for a poll,
`{error_message, error_code, request_id, url, status}` for a refused request.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    ValidationError,
    model_validator,
)

from bridge.envelope import NlsEnvelope, dumps
from bridge.errors import NlsError
from bridge.params import Flag, Params, _lower, _one_of, live
from bus import codes
from bus.schemas import TTS_SAMPLE_RATES, JobSentence, TtsJob, TtsParams

MAX_TEXT_CHARS = 100_000  # NLS long-text synthesis
PATH = "/rest/v1/tts/async"
TASK_ID = r"^[0-9a-f]{32}$"
URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\s]"
NOT_BLANK = r"\S"

SampleRate = Annotated[int, AfterValidator(_one_of(*TTS_SAMPLE_RATES))]


# ---- requests
class AsyncTtsRequest(Params):
    """payload.tts_request"""

    voice: str = Field(
        description="A preset (GET /stream/v1/tts/voices; NLS and OpenAI names select one too) "
        "or a cloned voice",
        pattern=NOT_BLANK,
        max_length=128,
        json_schema_extra=live("voices"),
    )
    text: str = Field(
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        pattern=NOT_BLANK,
        description=f"The text, at most {MAX_TEXT_CHARS:,} characters",
    )
    format: Annotated[Literal["pcm", "wav", "mp3"], BeforeValidator(_lower)] = Field(
        "wav", description="pcm: s16le mono; wav; mp3"
    )
    sample_rate: SampleRate = Field(
        16000, description="Hz", json_schema_extra={"enum": list(TTS_SAMPLE_RATES)}
    )
    enable_subtitle: Flag = Field(True, description="Sentence times in the answer")
    volume: int = Field(50, ge=0, le=100, description="50 = as synthesized")
    speech_rate: int = Field(0, ge=-500, le=500, description="-500 = 0.5x, 500 = 2x")
    pitch_rate: int = Field(0, ge=-500, le=500)

    def params(self) -> TtsParams:
        return TtsParams(
            voice=self.voice.strip(),
            format=self.format,
            sample_rate=self.sample_rate,  # type: ignore[arg-type]
            volume=self.volume,
            speech_rate=self.speech_rate,
            pitch_rate=self.pitch_rate,
            enable_subtitle=self.enable_subtitle,
        )


class AsyncTtsPayload(Params):
    tts_request: AsyncTtsRequest
    enable_notify: Flag = Field(False, description="Call notify_url when the job ends")
    notify_url: str | None = Field(
        None,
        description="http(s) URL POSTed the result when the job ends (with enable_notify); "
        "public hosts only unless TTS_ASYNC_ALLOW_PRIVATE_NOTIFY",
        max_length=2048,
        json_schema_extra={"format": "uri", "pattern": URL_PATTERN},
    )


class AsyncTtsCredentials(Params):
    appkey: str | None = Field(None, description="Compared with APPKEY when it is set")
    token: str | None = Field(None, description="Compared with APPTOKEN when it is set")


class AsyncTtsHeader(Params):
    """The credentials of a submit body alone (checked before the rest)."""

    header: AsyncTtsCredentials = Field(default_factory=AsyncTtsCredentials)


class AsyncTtsSubmit(AsyncTtsHeader):
    """POST /rest/v1/tts/async"""

    payload: AsyncTtsPayload
    context: dict[str, Any] = Field(default_factory=dict, description="Ignored (SDK info)")

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """notify_url is required when enable_notify is true."""
        schema = super().model_json_schema(*args, **kwargs)
        payload = schema["$defs"]["AsyncTtsPayload"]
        notify_on = {
            "properties": {"enable_notify": {"const": True}},
            "required": ["enable_notify"],
        }
        payload["if"] = notify_on
        payload["then"] = {"required": ["notify_url"]}
        return schema


class Query(BaseModel):
    """Query parameters: unknown ones ignored, an empty one is its default; anything else
    must be valid (no blank-means-default here: a link's parameters are exact)."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, data: object) -> object:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v != ""}
        return data


class AsyncTtsQuery(Query):
    """GET /rest/v1/tts/async"""

    task_id: str = Field(pattern=TASK_ID, description="From the submit answer")
    token: str | None = Field(None, description="Required when APPTOKEN is set")


class AsyncAudioQuery(Query):
    """GET /rest/v1/tts/async/audio/<task_id>.<format>"""

    expires: int | None = Field(None, ge=0, description="Signed link: valid until (Unix time)")
    signature: str | None = Field(
        None, pattern=r"^[0-9a-fA-F]{64}$", description="Signed link: its HMAC-SHA256 (hex)"
    )
    token: str | None = Field(None, description="Instead of a signed link: APPTOKEN")


def invalid(exc: ValidationError) -> NlsError:
    """The first error, naming the parameter by its path (payload.tts_request.text)."""
    error = exc.errors()[0]
    name = ".".join(str(part) for part in error["loc"]) or "body"
    field = str(error["loc"][-1]) if error["loc"] else ""
    code = codes.INVALID_PARAMETER
    if field == "sample_rate" and error["type"] not in ("int_parsing", "int_type"):
        code = codes.UNSUPPORTED_SAMPLE_RATE
    if error["type"] == "missing":
        message = f"{name} is required"
    elif error["type"] == "string_too_long":
        message = f"{name} is longer than {error['ctx']['max_length']:,} characters"
    else:
        shown = repr(error["input"])
        shown = shown if len(shown) <= 60 else f"{shown[:57]}..."
        reason = error["msg"].removeprefix("Value error, ")
        message = f"Invalid {name} {shown}: {reason[:1].lower()}{reason[1:]}"
    return NlsError(code, message, param=name)


# ---- answers
class AsyncSentence(BaseModel):
    text: str
    begin_time: str = Field(description="ms from the start of the audio, as a string (NLS)")
    end_time: str = Field(description="ms from the start of the audio, as a string (NLS)")


class AsyncData(BaseModel):
    task_id: str
    audio_address: str | None = Field(
        description="Absolute URL of the audio once the job succeeded (signed when auth is on)"
    )
    notify_custom: str | None = Field(description="The notify_url, when notify is on")
    sentences: list[AsyncSentence] | None = Field(
        description="With enable_subtitle, once the job succeeded"
    )
    progress: float | None = Field(None, description="Extension: parts done / parts (0..1)")
    parts_done: int | None = Field(None, description="Extension")
    parts_total: int | None = Field(None, description="Extension: 0 until the text is split")
    duration_ms: int | None = Field(None, description="Extension: length of the audio")


class AsyncAnswer(BaseModel):
    status: int = Field(description="HTTP status", examples=[200])
    error_code: int = Field(description="20000000 or the job's failure code")
    error_message: str = Field(description="SUCCESS, RUNNING, or why the job failed")
    request_id: str
    data: AsyncData


class AsyncError(BaseModel):
    status: int = Field(description="HTTP status")
    error_code: int = Field(description="NLS status code")
    error_message: str
    request_id: str
    url: str = Field(description="The path, or the notify_url in a failure callback")


class Unavailable(RootModel[AsyncError | NlsEnvelope]):
    """No JetStream (the async error), or the bridge is stopping (the NLS envelope)."""


def error_response(exc: NlsError, path: str = PATH) -> web.Response:
    body = {
        "error_message": exc.message,
        "error_code": exc.code,
        "request_id": uuid.uuid4().hex,
        "url": path,
        "status": exc.http,
    }
    return web.json_response(body, status=exc.http, dumps=dumps)


def answer(
    job: TtsJob, audio_address: str | None, sentences: list[JobSentence] | None = None
) -> dict[str, Any]:
    """The NLS answer of a poll (and of a callback): RUNNING, SUCCESS or the failure."""
    done = len(job.parts_done)
    data: dict[str, Any] = {
        "task_id": job.task_id,
        "audio_address": None,
        "notify_custom": job.notify_url,
        "sentences": None,
        "progress": round(done / job.parts_total, 4) if job.parts_total else 0.0,
        "parts_done": done,
        "parts_total": job.parts_total,
    }
    code, message = codes.SUCCESS, job.status
    if job.status == "SUCCESS":
        data["audio_address"] = audio_address
        data["duration_ms"] = job.duration_ms
        if job.params.enable_subtitle:
            data["sentences"] = [
                {"text": s.text, "begin_time": str(s.begin_ms), "end_time": str(s.end_ms)}
                for s in sentences or []
            ]
    elif job.status == "FAILED":
        code, message = job.error_code, job.error_message
    return {
        "status": 200,
        "error_code": code,
        "error_message": message,
        "request_id": uuid.uuid4().hex,
        "data": data,
    }
