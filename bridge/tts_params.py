"""Request parameters of the TTS protocols (NLS REST and WebSocket, OpenAI speech, voices), as
pydantic models in the style of bridge/params.py: lax as NLS clients are, the first error named.

Text limits depend on settings (TTS_MAX_TEXT_LENGTH, TTS_LONG_MAX_TEXT_LENGTH), so the models
that carry text are made per limit (`with_limit`) and the OpenAPI document states the limit the
bridge enforces. Blank text is refused by Python's own idea of blank, which the schema states as
the pattern `\\S`. JSON bodies (`JsonBody`) are read as their schema says: numbers as numbers,
and null or "" is not a default but an error (query strings and WebSocket payloads stay lax).
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)

from bridge.params import Flag, Params
from bus.schemas import TTS_SAMPLE_RATES, AudioFormat, TtsParams
from bus.voices import check_name

GET_MAX_TEXT = 300  # NLS: GET /stream/v1/tts
OPENAI_MAX_INPUT = 4096
NOT_BLANK = {"pattern": r"\S"}
OPENAI_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
OPENAI_RATE = 24000  # OpenAI's audio (and its pcm) is 24 kHz
RESERVED = ("info", "refresh")
VOICE = (
    "A preset voice, one of its aliases (NLS names such as xiaoyun, OpenAI names) or a cloned "
    "voice: GET /stream/v1/tts/voices"
)  # paths beside /stream/v1/tts/voices/{name}
NAME_PATTERN = r"^[\w\u4e00-\u9fff-][\w\u4e00-\u9fff .-]{0,63}$"


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _supported_rate(value: int) -> int:
    if value not in TTS_SAMPLE_RATES:
        raise ValueError(f"use one of {', '.join(map(str, TTS_SAMPLE_RATES))}")
    return value


def _voice_id(value: object) -> object:
    """OpenAI's voice: a name or `{"id": name}`."""
    if isinstance(value, dict) and "id" in value:
        return value["id"]
    return value


def text_field(description: str, limit: int | None = None) -> Any:
    if limit is not None:
        description = f"{description} (at most {limit} characters)"
    return Field(
        min_length=1, max_length=limit, description=description, json_schema_extra=NOT_BLANK
    )


Format = Annotated[AudioFormat, BeforeValidator(_lower)]
Rate = Annotated[
    int,
    AfterValidator(_supported_rate),
    WithJsonSchema({"type": "integer", "enum": list(TTS_SAMPLE_RATES), "description": "Hz"}),
]
Volume = Annotated[int, Field(ge=0, le=100, description="0..100; 50 = as synthesized")]
RateShift = Annotated[int, Field(ge=-500, le=500)]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


class JsonBody(Params):
    """A JSON request body: types as the schema states them (70.0 is an integer, as JSON
    Schema counts); null and blank are values."""

    model_config = ConfigDict(strict=True)

    @model_validator(mode="before")
    @classmethod
    def _blank_is_default(cls, data: object) -> object:
        if isinstance(data, dict):
            return {k: _integral(v) for k, v in data.items()}
        return data


def _integral(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


class Synthesis(Params):
    """What NLS synthesis requests share (REST, SpeechSynthesizer, FlowingSpeechSynthesizer)."""

    voice: str = Field("xiaoyun", description=VOICE)
    format: Format = Field("pcm", description="pcm (s16le mono), wav, mp3; flac ogg opus aac")
    sample_rate: Rate = 16000
    volume: Volume = 50
    speech_rate: RateShift = Field(0, description="-500..500: -500 = 0.5x, 500 = 2x (NLS)")
    pitch_rate: RateShift = Field(0, description="-500..500: pitch down / up")
    prompt: str | None = Field(
        None,
        max_length=500,
        description="Extension: a style instruction for voices that take one (CosyVoice clones)",
    )

    def tts_params(self, enable_subtitle: bool = False) -> TtsParams:
        return TtsParams(
            voice=self.voice.strip(),
            format=self.format,
            sample_rate=self.sample_rate,  # type: ignore[arg-type]
            volume=self.volume,
            speech_rate=self.speech_rate,
            pitch_rate=self.pitch_rate,
            instructions=self.prompt,
            enable_subtitle=enable_subtitle,
        )


class NlsTtsRequest(Synthesis):
    """GET /stream/v1/tts: the query (the appkey too, as the security scheme says)."""

    text: str = text_field("The text to speak")
    token: str | None = Field(None, description="The token (or the X-NLS-Token header)")


class NlsTtsBody(JsonBody, NlsTtsRequest):
    """POST /stream/v1/tts: the JSON body carries the appkey too."""

    voice: str = Field("xiaoyun", min_length=1, description=VOICE, json_schema_extra=NOT_BLANK)
    appkey: str | None = Field(None, description="Checked when APPKEY is set (or the query's)")

    _text = field_validator("text", "voice")(_not_blank)


class SynthesizerStart(Synthesis):
    """Payload of SpeechSynthesizer / SpeechLongSynthesizer StartSynthesis."""

    text: str = text_field("The text to speak")
    enable_subtitle: Flag = Field(False, description="MetaInfo events: sentence and word times")


class FlowingStart(Synthesis):
    """Payload of FlowingSpeechSynthesizer StartSynthesis (the SDK spells volume `volumn`)."""

    volume: Volume = Field(50, validation_alias=AliasChoices("volume", "volumn"))
    enable_subtitle: Flag = Field(False, description="Word times in SentenceSynthesis/End")
    session_id: str | None = Field(None, description="Accepted, not used")


class RunSynthesis(Params):
    """Payload of FlowingSpeechSynthesizer RunSynthesis: more text (a token is fine)."""

    text: str = Field(min_length=1, description="More text")


@functools.cache
def with_limit(model: type[Params], limit: int, name: str, field: str = "text") -> type[Params]:
    """`model` named `name`, with `field` at most `limit` characters."""
    description = model.model_fields[field].description or ""
    new = (str, text_field(description, limit))
    return create_model(name, __base__=model, __doc__=model.__doc__, **{field: new})  # type: ignore[call-overload]


# ---- OpenAI: POST /v1/audio/speech (JSON)
VOICE_SCHEMA = {
    "anyOf": [
        {"type": "string", **NOT_BLANK},
        {
            "type": "object",
            "properties": {"id": {"type": "string", **NOT_BLANK}},
            "required": ["id"],
        },
    ],
    "description": "A voice name (OpenAI's alloy, echo, nova ... are aliases) or "
    '{"id": name}; GET /stream/v1/tts/voices lists them',
}


class SpeechRequest(JsonBody):
    model: str = Field("tts-1", description="Any name (tts-1, gpt-4o-mini-tts, ...): ignored")
    input: str = text_field("The text to speak", OPENAI_MAX_INPUT)
    voice: Annotated[str, BeforeValidator(_voice_id), WithJsonSchema(VOICE_SCHEMA)]
    response_format: Annotated[Literal[OPENAI_FORMATS], BeforeValidator(_lower)] = Field(  # type: ignore[valid-type]
        "mp3", description="Every format is 24 kHz; pcm is raw s16le mono"
    )
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = Field(None, max_length=500, description="A style instruction")
    stream_format: Annotated[Literal["audio", "sse"], BeforeValidator(_lower)] = Field(
        "audio", description="audio: the bytes as made; sse: speech.audio.delta events"
    )

    _text = field_validator("input", "voice")(_not_blank)

    def tts_params(self) -> TtsParams:
        return TtsParams(
            voice=self.voice.strip(),
            format=self.response_format,  # type: ignore[arg-type]
            sample_rate=OPENAI_RATE,
            speed=self.speed,
            instructions=self.instructions,
        )


# ---- voices: POST /stream/v1/tts/voices (multipart/form-data)
class CloneForm(Params):
    # other fields are ignored; a multipart part name cannot hold control characters
    model_config = ConfigDict(
        json_schema_extra={"propertyNames": {"pattern": "^[^\\x00-\\x1f\\x7f]*$"}}
    )

    name: str = Field(
        min_length=1,
        max_length=64,
        description="1-64 letters (any script), digits, spaces, '.', '_' or '-', not starting "
        "with a space or '.'; not a preset or alias (409), nor info / refresh",
        json_schema_extra={"pattern": NAME_PATTERN},
    )
    audio: bytes = Field(min_length=1, description="The prompt: 1-30 s, any format the ASR reads")
    prompt_text: str | None = Field(
        None, max_length=1000, description="What the prompt says; transcribed when omitted"
    )
    language: str | None = Field(None, max_length=16, description="Of the prompt: zh, en, ...")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.match(NAME_PATTERN, value):  # Python's \\w, as the schema's pattern reads
            raise ValueError("1-64 letters, digits, spaces, '.', '_' or '-', not starting with "
                             "a space or '.'")  # fmt: skip
        return check_name(value)

    @classmethod
    def data(cls, fields: dict[str, list[str]], audio: bytes | None) -> dict[str, Any]:
        """A multipart form's fields (the last of repeated ones) and its audio part."""
        data: dict[str, Any] = {name: values[-1] for name, values in fields.items()}
        if audio is not None:
            data["audio"] = audio
        return data


class VoiceRef(BaseModel):
    """Path parameter of /stream/v1/tts/voices/{name}."""

    model_config = ConfigDict(extra="ignore")
    name: str
