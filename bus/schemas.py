"""Message schemas of the bus contract: the one set of types that bus, engines and bridge share.

Control messages are msgpack maps of these models (defaults omitted), or JSON objects: a body
that starts with `{` is JSON, and an engine answers a JSON request (or one with the header
`Fs-Encoding: json`) in JSON, events included. Audio is never wrapped: it travels as raw bytes.
"""

from __future__ import annotations

from typing import Literal, TypeVar, get_args

import msgpack
from pydantic import BaseModel, Field, ValidationError

from bus.codes import SUCCESS


class ModelDesc(BaseModel):
    """A recognition model as /stream/v1/asr/models lists it."""

    id: str
    name: str
    languages: list[str] = []
    description: str = ""
    default: bool = False
    supports_realtime: bool = True
    offline_path: str | None = None
    realtime_path: str | None = None


class Word(BaseModel):
    """A word (ASR) or a subtitle unit (TTS) with its place in the audio, ms."""

    text: str
    begin_ms: int
    end_ms: int


class VoiceDesc(BaseModel):
    """A voice as /stream/v1/tts/voices lists it. Presets come from engines, clones from the
    voice store; `aliases` are other names that select it (NLS voice names, OpenAI names)."""

    id: str
    name: str
    kind: Literal["preset", "clone"] = "preset"
    language: str = ""  # BCP 47 as NLS lists it: zh-CN, en-US, ja-JP, ko-KR, zh-HK
    gender: Literal["female", "male", ""] = ""
    description: str = ""
    aliases: list[str] = []


class VoiceRecord(BaseModel):
    """A cloned voice in the voice store (JetStream KV; its prompt audio in the object store)."""

    name: str
    text: str  # what the prompt recording says
    language: str = ""  # of the prompt ("zh", "en", ...), when known
    sample_rate: int  # of the stored WAV (16-bit mono)
    duration_ms: int
    audio_sha256: str  # the object holding the WAV, content-addressed
    created_at: float = 0.0
    source: Literal["api", "dir"] = "api"  # the public API or the voices/ folder

    def desc(self) -> VoiceDesc:
        return VoiceDesc(
            id=self.name,
            name=self.name,
            kind="clone",
            language=self.language,
            description=f"cloned voice ({self.duration_ms / 1000:.1f} s prompt)",
        )


class Histogram(BaseModel):
    """Observations (seconds) counted per upper bound, cumulatively as Prometheus does; the
    last count is the total (+Inf)."""

    bounds: list[float]
    counts: list[int]  # len(bounds) + 1
    sum: float = 0.0


class EngineInfo(BaseModel):
    """What an engine announces on the heartbeat subject (and as micro service metadata)."""

    id: str
    task: Literal["asr", "tts"] = "asr"
    backend: str
    device: str
    models: list[ModelDesc] = []
    voices: list[VoiceDesc] = []  # TTS: preset voices
    features: list[str] = []  # TTS: "clone", "instructions"
    sample_rate: int = 0  # TTS: the rate the backend speaks at (output is resampled)
    mode: str = ""  # the backend's model mode (ASR_MODEL_MODE / TTS_MODEL_MODE)
    capacity: int
    active: int = 0
    draining: bool = False  # takes no new sessions
    gone: bool = False  # the engine's last word before it exits
    load: dict[str, float] = {}
    # counters since the engine started and queue depths (docs/operations.md), and latencies
    stats: dict[str, float] = {}
    latency: dict[str, Histogram] = {}
    host: str = ""
    pid: int = 0
    version: str = ""
    started_at: float = 0.0


class AsrParams(BaseModel):
    """Recognition options of a session or a one-shot request (NLS names in comments)."""

    model: str | None = None  # customization_id; None = the engine's default model
    language: str | None = None  # e.g. "zh", "en"; None = detect
    max_sentence_silence_ms: int = Field(800, ge=100, le=60000)  # VAD end-point silence
    enable_intermediate_result: bool = True  # partials while a sentence is open
    enable_punctuation: bool = True  # enable_punctuation_prediction
    enable_itn: bool = False  # enable_inverse_text_normalization
    enable_words: bool = False  # word timestamps in each sentence
    enable_voice_detection: bool = False  # one-shot: VAD segmentation before decoding
    hotwords: list[str] = []
    single_sentence: bool = False  # SpeechRecognizer: the first end point ends the stream


class AsrOpen(BaseModel):
    """Open a session. mode "stream": realtime events while audio flows; "file": one-shot,
    the engine decodes the whole upload after stop and sends one "end" per segment."""

    session_id: str = ""  # empty: the engine makes one (OpenReply.session_id)
    events_subject: str
    mode: Literal["stream", "file"] = "stream"
    sample_rate: int = Field(16000, ge=8000, le=48000)  # of the PCM the client sends
    params: AsrParams = AsrParams()
    trace_id: str = ""  # the client's id for the session (the NLS task_id), for the logs


class OpenReply(BaseModel):
    """The answer to an open request. On success it names the session's own subjects on the
    engine that took it, and the flow-control window: audio bytes the client may have sent
    beyond the last `ack` event (the engine fails a session that overruns it twice over)."""

    ok: bool
    code: int = SUCCESS
    message: str = ""
    session_id: str = ""
    engine_id: str = ""
    audio_subject: str = ""
    control_subject: str = ""
    window_bytes: int = 0


class AsrControl(BaseModel):
    """stop: end of audio, flush and finish. control: new params mid-stream. abort: drop it."""

    op: Literal["stop", "control", "abort"]
    params: AsrParams | None = None
    sent_bytes: int | None = None  # stop: audio bytes the client published (loss check)


EventType = Literal["begin", "partial", "end", "completed", "error", "ack"]


class AsrEvent(BaseModel):
    """begin / partial / end per sentence (index from 1), then completed; or error (code).
    Flow control: `acked_bytes` (audio the engine has taken so far) rides on any event; an
    `ack` event carries it alone when no other event went out for half a window."""

    type: EventType
    index: int = 0
    time_ms: int = 0  # partial: audio processed so far; end: end of the sentence
    begin_ms: int = 0
    text: str = ""
    confidence: float | None = None
    words: list[Word] | None = None
    duration_ms: int = 0  # completed: audio received, in ms
    acked_bytes: int = 0
    code: int = SUCCESS
    message: str = ""


class Recognition(BaseModel):
    """The reply of a one-shot recognition: its sentences as `end` events."""

    ok: bool = True
    code: int = SUCCESS
    message: str = ""
    engine_id: str = ""
    text: str = ""
    duration_ms: int = 0
    segments: list[AsrEvent] = []


AudioFormat = Literal["pcm", "wav", "mp3", "flac", "ogg", "opus", "aac"]
TtsSampleRate = Literal[8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000]
TTS_SAMPLE_RATES: tuple[int, ...] = get_args(TtsSampleRate)


class TtsParams(BaseModel):
    """Synthesis options (NLS names; `speed` and `instructions` as OpenAI / FunSpeech add)."""

    voice: str = Field("xiaoyun", max_length=128)
    format: AudioFormat = "pcm"
    sample_rate: TtsSampleRate = 16000
    volume: int = Field(50, ge=0, le=100)  # 50 = as synthesized
    speech_rate: int = Field(0, ge=-500, le=500)  # NLS curve: -500 = 0.5x, 500 = 2x
    pitch_rate: int = Field(0, ge=-500, le=500)
    speed: float | None = Field(None, ge=0.25, le=4.0)  # OpenAI speed; overrides speech_rate
    instructions: str | None = Field(None, max_length=500)  # style prompt (FunSpeech `prompt`)
    language: str | None = None  # of the text, when the client knows it
    enable_subtitle: bool = False  # word timings in sentence_end events


class TtsRequest(BaseModel):
    """One-shot synthesis: the reply subject receives the audio and events, then `completed`."""

    text: str = Field(min_length=1)
    params: TtsParams = TtsParams()


class TtsOpen(BaseModel):
    """Open a flowing session (text pushed as it comes, e.g. an LLM's tokens)."""

    session_id: str = ""  # empty: the engine makes one
    events_subject: str
    params: TtsParams = TtsParams()
    trace_id: str = ""  # the client's id for the session (the NLS task_id), for the logs


class TtsControl(BaseModel):
    """text: more text (buffered server-side, cut at sentence ends). stop: no more text, finish
    what is buffered. abort: drop the session."""

    op: Literal["text", "stop", "abort"]
    text: str = ""


TtsEventType = Literal["started", "sentence_begin", "sentence_end", "completed", "error"]


class TtsEvent(BaseModel):
    """Events of a synthesis, in order with its audio. Every message on the reply / events
    subject carries the header `Fs-Event`: `audio` (the body is encoded audio, no wrapping) or
    one of these types (the body is this model). Times are ms in the output audio."""

    type: TtsEventType
    index: int = 0  # sentence number from 1
    text: str = ""  # the sentence as given
    begin_ms: int = 0
    end_ms: int = 0
    words: list[Word] | None = None  # with enable_subtitle, when the backend times words
    sample_rate: int = 0  # started: of the audio that follows
    format: str = ""  # started
    engine_id: str = ""  # started
    duration_ms: int = 0  # completed: audio produced
    code: int = SUCCESS
    message: str = ""


JobStatus = Literal["RUNNING", "SUCCESS", "FAILED"]
JobRoute = Literal["preset", "clone"]


class JobSentence(BaseModel):
    text: str
    begin_ms: int
    end_ms: int


class TtsJob(BaseModel):
    """The state of an async (long-text) synthesis job, in the KV bucket `fs_tts_jobs`."""

    task_id: str
    status: JobStatus = "RUNNING"
    params: TtsParams
    text_chars: int
    route: JobRoute = "preset"  # which engines pull its work: any with presets / cloning ones
    notify_url: str | None = None
    public_url: str = ""  # base URL the job was submitted to (links in its callback)
    part_chars: int = 0  # the split's part length (a repeated split cuts the same parts)
    parts_total: int = 0  # 0 until an engine has split the text
    parts_done: list[int] = []
    engines: list[str] = []  # engines that synthesized its parts
    sentence_count: int = 0  # of the result; the sentences are in the object <task>.sentences
    audio_bytes: int = 0
    duration_ms: int = 0
    error_code: int = SUCCESS
    error_message: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    completed_at: float = 0.0
    notify_queued: bool = False  # the callback is in the notify queue
    notified_at: float = 0.0  # the callback was delivered (2xx)
    notify_error: str = ""  # why the last callback attempt failed


class JobWork(BaseModel):
    """A work item in the job stream: split a job's text into parts, synthesize one part, or
    assemble the parts (any engine of the job's route takes any item; redelivered if the engine
    dies). The text to split is in the object store (`<task>.text`), never in a message."""

    kind: Literal["split", "part", "assemble"]
    task_id: str
    index: int = 0  # part
    text: str = ""  # part: its text


class JobSentences(BaseModel):
    """The sentences of a finished job with their times in its audio (object store)."""

    sentences: list[JobSentence] = []


class JobPart(BaseModel):
    """One synthesized part in the object store: raw s16le PCM and its sentences (times from
    the part's start)."""

    pcm: bytes
    sample_rate: int
    sentences: list[JobSentence] = []
    engine_id: str = ""


M = TypeVar("M", bound=BaseModel)


def encode(message: BaseModel, json: bool = False) -> bytes:
    if json:
        return message.model_dump_json(exclude_defaults=True).encode()
    return msgpack.packb(message.model_dump(exclude_defaults=True), use_bin_type=True)


def is_json(data: bytes) -> bool:
    """A JSON object body (a msgpack map never starts with `{`)."""
    return data[:1] == b"{"


def decode(cls: type[M], data: bytes) -> M:
    if is_json(data):
        return cls.model_validate_json(data)
    return cls.model_validate(msgpack.unpackb(data, raw=False))


def recognize_headers(params: AsrParams, sample_rate: int) -> dict[str, str]:
    """Parameters of a one-shot request as NATS headers (field names; non-defaults only)."""
    headers = {"sample_rate": str(sample_rate)}
    for key, value in params.model_dump(exclude_defaults=True).items():
        if isinstance(value, bool):
            headers[key] = "true" if value else "false"
        elif isinstance(value, list):
            headers[key] = ",".join(value)
        else:
            headers[key] = str(value)
    return headers


def params_from_headers(headers: dict[str, str] | None) -> tuple[AsrParams, int, str]:
    """The inverse of recognize_headers, for engines: (params, sample_rate, format).
    Raises ValueError naming the bad header."""
    fields: dict[str, object] = {}
    sample_rate, fmt = 16000, "pcm"
    for key, value in (headers or {}).items():
        name = key.lower()
        if name == "sample_rate":
            try:
                sample_rate = int(value)
            except ValueError:
                raise ValueError(f"Invalid sample_rate header {value!r}") from None
        elif name == "format":
            fmt = value.lower()
        elif name == "hotwords":
            fields[name] = [w for w in value.split(",") if w.strip()]
        elif name in AsrParams.model_fields:
            fields[name] = value
    try:
        return AsrParams.model_validate(fields), sample_rate, fmt
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"Invalid header {where}: {first['msg']}") from None
