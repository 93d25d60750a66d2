"""Request parameters of the public protocols as pydantic models. Handlers validate with them
(`parse`), and the OpenAPI document is generated from their JSON schemas.

Lax on purpose, as NLS clients are: unknown keys are ignored, numbers may come as strings
("800"), booleans as true/false, 1/0, yes/no or on/off, and an empty value means the default
(for a boolean: false).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from bridge import audio
from bridge.errors import NlsError
from bus import codes
from bus.schemas import AsrParams

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")
LIVE_ENUM = "x-live"  # a JSON schema mark: the OpenAPI builder fills `enum` from live engines
PARSE_ERRORS = ("int_parsing", "int_from_float", "int_type", "float_parsing", "float_type")


def _flag(value: object) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in TRUE or text in FALSE:
            return text in TRUE
    raise ValueError("not a boolean: use true or false")


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _words(value: object) -> object:
    """A list, or one string of comma- (or newline-) separated words and phrases."""
    if isinstance(value, str):
        return [w.strip() for w in value.replace("\n", ",").split(",") if w.strip()]
    return value


def _one_of(*allowed: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if value not in allowed:
            raise ValueError(f"use {' or '.join(map(str, allowed))}")
        return value

    return check


Flag = Annotated[bool, BeforeValidator(_flag)]
Hotwords = Annotated[
    list[str],
    BeforeValidator(_words),
    WithJsonSchema({"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]}),
]
StreamRate = Annotated[int, AfterValidator(_one_of(8000, 16000))]
Silence = Annotated[int, Field(ge=200, le=6000, description="ms of silence that ends a sentence")]


def live(kind: str) -> dict[str, Any]:
    return {LIVE_ENUM: kind}


class Params(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _blank_is_default(cls, data: object) -> object:
        if isinstance(data, dict):
            return {
                k: v
                for k, v in data.items()
                if v is not None and not (isinstance(v, str) and not v.strip())
            }
        return data


# ---- NLS one-shot REST: POST /stream/v1/asr (query string)
class NlsAsrQuery(Params):
    format: Annotated[
        Literal[audio.FORMATS],  # type: ignore[valid-type]
        BeforeValidator(_lower),
    ] = Field("pcm", description="Audio format; containers are recognised from their bytes")
    sample_rate: int = Field(
        16000,
        ge=audio.MIN_RATE,
        le=audio.MAX_RATE,
        description="Rate of raw PCM in Hz (containers carry their own)",
    )
    customization_id: str | None = Field(
        None, description="Model id from /stream/v1/asr/models", json_schema_extra=live("models")
    )
    vocabulary_id: str | None = Field(None, description="Accepted, no effect")
    enable_punctuation_prediction: Flag = Field(False, description="Punctuate the result")
    enable_inverse_text_normalization: Flag = Field(False, description="Numbers as digits")
    enable_voice_detection: Flag = Field(False, description="VAD segmentation before decoding")
    disfluency: Flag = Field(False, description="Accepted, no effect")
    enable_words: Flag = Field(False, description="Extension: word timestamps in `sentences`")
    hotwords: Annotated[Hotwords, WithJsonSchema({"type": "string"})] = Field(
        default_factory=list, description="Extension: comma-separated words or phrases"
    )
    language: str | None = Field(
        None,
        description="Extension: the spoken language, e.g. zh, en",
        json_schema_extra=live("languages"),
    )
    dolphin_lang_sym: str | None = Field(
        None,
        description="FunSpeech's name for `language`; when both are given they must agree",
        json_schema_extra=live("languages"),
    )
    audio_address: str | None = Field(
        None,
        description="http(s) URL to download instead of reading the body (public hosts only)",
        json_schema_extra={"format": "uri", "pattern": r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\s]"},
    )

    @field_validator("dolphin_lang_sym")
    @classmethod
    def _agrees(cls, value: str, info: ValidationInfo) -> str:
        language = info.data.get("language")
        if language and language != value:
            raise ValueError(f"language is {language!r}: give one of the two")
        return value

    def asr_params(self) -> AsrParams:
        return AsrParams(
            model=self.customization_id,
            language=self.language or self.dolphin_lang_sym,
            enable_punctuation=self.enable_punctuation_prediction,
            enable_itn=self.enable_inverse_text_normalization,
            enable_voice_detection=self.enable_voice_detection,
            enable_words=self.enable_words,
            enable_intermediate_result=False,
            hotwords=self.hotwords,
        )


# ---- NLS WebSocket: Start and Control payloads
class StreamStart(Params):
    format: Annotated[Literal["pcm", "wav"], BeforeValidator(_lower)] = Field(
        "pcm", description="pcm: s16le mono; wav: a RIFF header first (stripped)"
    )
    sample_rate: StreamRate = Field(
        16000, description="8000 or 16000 Hz", json_schema_extra={"enum": [8000, 16000]}
    )
    enable_intermediate_result: Flag = False
    enable_punctuation_prediction: Flag = False
    enable_inverse_text_normalization: Flag = False
    enable_words: Flag = Field(False, description="Word timestamps in SentenceEnd")
    customization_id: str | None = Field(
        None,
        validation_alias=AliasChoices("customization_id", "model"),
        description="Model id from /stream/v1/asr/models (alias model)",
    )
    language: str | None = Field(None, description="e.g. zh, en; detected when absent")
    hotwords: Hotwords = Field([], description="A list, or comma-separated words or phrases")

    def asr_params(self) -> AsrParams:
        return AsrParams(
            model=self.customization_id,
            language=self.language,
            enable_intermediate_result=self.enable_intermediate_result,
            enable_punctuation=self.enable_punctuation_prediction,
            enable_itn=self.enable_inverse_text_normalization,
            enable_words=self.enable_words,
            hotwords=self.hotwords,
        )


class TranscriberStart(StreamStart):
    """Payload of SpeechTranscriber.StartTranscription."""

    max_sentence_silence: Silence = 800

    def asr_params(self) -> AsrParams:
        return (
            super()
            .asr_params()
            .model_copy(update={"max_sentence_silence_ms": self.max_sentence_silence})
        )


class RecognizerStart(StreamStart):
    """Payload of SpeechRecognizer.StartRecognition."""

    max_end_silence: Silence = 800
    enable_voice_detection: Flag = Field(False, description="End at the first end point")

    def asr_params(self) -> AsrParams:
        update = {
            "max_sentence_silence_ms": self.max_end_silence,
            "single_sentence": self.enable_voice_detection,
        }
        return super().asr_params().model_copy(update=update)


class TranscriberControl(Params):
    """Payload of SpeechTranscriber.ControlTranscriber: what it sets applies from now on."""

    max_sentence_silence: Silence | None = None
    enable_intermediate_result: Flag | None = None
    enable_punctuation_prediction: Flag | None = None
    enable_inverse_text_normalization: Flag | None = None
    enable_words: Flag | None = None

    def applied_to(self, params: AsrParams) -> AsrParams:
        names = {
            "max_sentence_silence": "max_sentence_silence_ms",
            "enable_intermediate_result": "enable_intermediate_result",
            "enable_punctuation_prediction": "enable_punctuation",
            "enable_inverse_text_normalization": "enable_itn",
            "enable_words": "enable_words",
        }
        update = {names[k]: v for k, v in self.model_dump(exclude_unset=True).items()}
        return params.model_copy(update=update)


# ---- OpenAI: POST /v1/audio/transcriptions (multipart/form-data)
ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt", "diarized_json"]
Granularity = Annotated[Literal["word", "segment"], BeforeValidator(_lower)]


class TranscriptionForm(Params):
    # other fields are ignored; a multipart part name cannot hold control characters
    model_config = ConfigDict(
        json_schema_extra={"propertyNames": {"pattern": "^[^\\x00-\\x1f\\x7f]*$"}}
    )

    file: bytes = Field(min_length=1, description="The audio, any format the bridge decodes")
    model: str = Field(
        "",
        description="A live model id selects it; any other name (whisper-1, gpt-4o-transcribe, "
        "...) uses the default model",
    )
    language: str | None = Field(
        None, description="The spoken language, e.g. en, zh", json_schema_extra=live("languages")
    )
    prompt: str = Field("", description="Passed to the engine as a hotword hint")
    response_format: Annotated[ResponseFormat, BeforeValidator(_lower)] = "json"
    timestamp_granularities: list[Granularity] = Field(
        [],
        validation_alias=AliasChoices("timestamp_granularities[]", "timestamp_granularities"),
        description="word adds `words` to verbose_json",
    )
    temperature: float = Field(0.0, ge=0.0, le=1.0, description="Accepted (decoding is greedy)")
    stream: Flag = Field(False, description="Server-sent events")

    @classmethod
    def from_form(cls, fields: dict[str, list[str]], file: bytes | None) -> TranscriptionForm:
        """Repeated fields: the granularities are a list, others take the last value."""
        data: dict[str, Any] = {
            name: values if name.startswith("timestamp_") else values[-1]
            for name, values in fields.items()
        }
        if file is not None:
            data["file"] = file
        return parse(cls, data)


# ---- validation errors -> NlsError
M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: dict[str, Any]) -> M:
    """model_validate; the first error becomes an NlsError naming the parameter."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc) from None


def invalid(exc: ValidationError) -> NlsError:
    error = exc.errors()[0]
    name = ".".join(str(part) for part in error["loc"][:1]) or "payload"
    code = codes.INVALID_PARAMETER
    if name == "sample_rate" and error["type"] not in PARSE_ERRORS:
        code = codes.UNSUPPORTED_SAMPLE_RATE
    if error["type"] == "missing":
        message = f"{name} is required"
    elif error["type"] == "bytes_too_short":
        message = f"{name} must not be empty"
    else:
        reason = error["msg"].removeprefix("Value error, ")
        message = f"Invalid {name} {error['input']!r}: {reason[:1].lower()}{reason[1:]}"
    return NlsError(code, message, param=name)
