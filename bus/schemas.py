"""Message schemas of the bus contract. Control messages are msgpack maps of these models
(defaults omitted); audio is never wrapped: it travels as raw PCM bytes."""

from __future__ import annotations

from typing import Literal, TypeVar

import msgpack
from pydantic import BaseModel, Field

from bus.codes import SUCCESS


class ModelDesc(BaseModel):
    id: str
    name: str
    languages: list[str] = []
    description: str = ""
    default: bool = False
    supports_realtime: bool = True
    offline_path: str | None = None
    realtime_path: str | None = None


class EngineInfo(BaseModel):
    """What an engine announces on the heartbeat subject (and as micro service metadata)."""

    id: str
    task: Literal["asr"] = "asr"
    backend: str
    device: str
    models: list[ModelDesc] = []
    capacity: int
    active: int = 0
    draining: bool = False  # takes no new sessions
    gone: bool = False  # the engine's last word before it exits
    load: dict[str, float] = {}
    host: str = ""
    pid: int = 0
    version: str = ""
    started_at: float = 0.0


class AsrParams(BaseModel):
    """Recognition options; mirrors engines.asr.base.AsrOptions."""

    model: str | None = None
    language: str | None = None
    max_sentence_silence_ms: int = Field(800, ge=100, le=60000)
    enable_intermediate_result: bool = True
    enable_punctuation: bool = True
    enable_itn: bool = False
    enable_words: bool = False
    enable_voice_detection: bool = False
    hotwords: list[str] = []
    single_sentence: bool = False


class AsrOpen(BaseModel):
    """Open a session. mode "stream": realtime events while audio flows; "file": one-shot,
    the engine decodes the whole upload after stop and sends one "end" per segment."""

    session_id: str
    events_subject: str
    mode: Literal["stream", "file"] = "stream"
    sample_rate: int = Field(16000, ge=8000, le=48000)  # of the PCM the client sends
    params: AsrParams = AsrParams()


class OpenReply(BaseModel):
    ok: bool
    code: int = SUCCESS
    message: str = ""


class AsrControl(BaseModel):
    """stop: end of audio, flush and finish. control: new params mid-stream. abort: drop it."""

    op: Literal["stop", "control", "abort"]
    params: AsrParams | None = None


class WordOut(BaseModel):
    text: str
    begin_ms: int
    end_ms: int


class AsrEvent(BaseModel):
    """begin / partial / end per sentence (index from 1), then completed; or error (code)."""

    type: Literal["begin", "partial", "end", "completed", "error"]
    index: int = 0
    time_ms: int = 0
    begin_ms: int = 0
    text: str = ""
    confidence: float | None = None
    words: list[WordOut] | None = None
    duration_ms: int = 0  # completed: audio received, in ms
    code: int = SUCCESS
    message: str = ""


M = TypeVar("M", bound=BaseModel)


def encode(message: BaseModel) -> bytes:
    return msgpack.packb(message.model_dump(exclude_defaults=True), use_bin_type=True)


def decode(cls: type[M], data: bytes) -> M:
    return cls.model_validate(msgpack.unpackb(data, raw=False))
