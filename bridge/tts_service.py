"""TTS steps the protocol handlers share: starting a synthesis on the bus (one-shot or flowing)
and waiting for its first answer, content types, text limits and NLS subtitles. Every failure is
an NlsError the handler turns into its protocol's error."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from bridge.errors import NlsError
from bus import codes
from bus.client import Bus, BusError, TtsMessage, TtsSession
from bus.schemas import TtsEvent, TtsParams
from engines.tts.encode import MIME
from funspeech.settings import Settings

Synthesis = AsyncIterator[TtsMessage]


def tts_error(exc: BusError, bus: Bus) -> NlsError:
    """A bus failure; a server error while no TTS engine is live is 503 (unavailable)."""
    unavailable = exc.code == codes.SERVER_ERROR and not bus.directory.has_engines("tts")
    return NlsError(exc.code, exc.message, http=503 if unavailable else None)


def check_text(text: object, limit: int, where: str, name: str = "text") -> None:
    """A clear error for text over a limit (before validation, which would echo all of it)."""
    if isinstance(text, str) and len(text) > limit:
        raise NlsError(
            codes.INVALID_PARAMETER,
            f"{name} is {len(text)} characters: {where} takes at most {limit}",
            param=name,
        )


def content_type(fmt: str, rate: int, nls_mpeg: bool = False) -> str:
    """The audio's media type (raw PCM says its rate); `nls_mpeg`: audio/mpeg for every
    format, as NLS answers (TTS_REST_MPEG_CONTENT_TYPE)."""
    if nls_mpeg:
        return MIME["mp3"]
    if fmt == "pcm":
        return f"{MIME['pcm']};rate={rate};channels=1"
    return MIME[fmt]


async def wait_engine(bus: Bus, settings: Settings) -> None:
    """A bridge that just started may not have heard from the engines yet: wait up to
    ASR_OPEN_TIMEOUT for one; none -> 503."""
    if bus.directory.has_engines("tts"):
        return
    try:
        await bus.directory.wait_for(1, timeout=settings.asr_open_timeout, task="tts")
    except TimeoutError:
        raise NlsError(codes.SERVER_ERROR, "No TTS engine is running", http=503) from None


async def synthesize(
    bus: Bus, text: str, params: TtsParams, settings: Settings
) -> tuple[list[TtsMessage], Synthesis]:
    """Start a one-shot synthesis and wait for its first audio (or its end): a failure before
    any audio (an unknown voice, an instruction the voice cannot take) is an NlsError, so the
    client gets a proper error rather than a stream that breaks. Returns the messages so far
    and the rest of the synthesis."""
    await wait_engine(bus, settings)
    stream = bus.synthesize(text, params, timeout=settings.tts_stall_timeout)
    head: list[TtsMessage] = []
    try:
        while not head or head[-1].kind not in ("audio", "completed"):
            head.append(await anext(stream))
    except BusError as exc:
        await close_stream(stream)
        raise tts_error(exc, bus) from None
    except StopAsyncIteration:
        raise NlsError(codes.SERVER_ERROR, "The synthesis ended without an answer") from None
    return head, stream


async def chain(head: list[TtsMessage], stream: Synthesis) -> Synthesis:
    """The messages already received, then the rest."""
    for message in head:
        yield message
    async for message in stream:
        yield message


async def open_session(
    bus: Bus, params: TtsParams, settings: Settings
) -> tuple[TtsSession, TtsMessage]:
    """Open a flowing session and wait for its first event (`started`, or an error such as an
    unknown voice: then the session is closed and the NlsError raised)."""
    await wait_engine(bus, settings)
    try:
        session = await bus.open_tts(params, timeout=settings.asr_open_timeout)
    except BusError as exc:
        raise tts_error(exc, bus) from None
    try:
        first = await session.next_message(timeout=settings.tts_stall_timeout)
    except TimeoutError:
        await session.abort()
        raise NlsError(codes.SERVER_ERROR, "The TTS engine did not start the session") from None
    if first.kind == "error":
        assert first.event is not None
        raise failure(first.event, bus)
    return session, first


def failure(event: TtsEvent, bus: Bus) -> NlsError:
    return tts_error(BusError(event.code, event.message), bus)


async def close_stream(stream: Synthesis) -> None:
    with contextlib.suppress(Exception):
        await stream.aclose()  # type: ignore[attr-defined]


def stalled(timeout: float) -> str:
    return f"No audio from the TTS engine for {timeout:g} s"


# ---- NLS subtitles
def _find(hay: str, needle: str, start: int) -> int:
    """Index of `needle` in `hay` from `start`, case-insensitive where lower() keeps lengths."""
    if len(hay.lower()) == len(hay) and len(needle.lower()) == len(needle):
        return hay.lower().find(needle.lower(), start)
    return hay.find(needle, start)


class Subtitles:
    """NLS subtitles of each spoken sentence: an entry for the sentence (`sentence: true`) and
    one per word the engine timed. Times are ms in the output audio; `begin_index` /
    `end_index` count characters of `text` (the whole request) or, without it, of the
    sentence (flowing sessions, whose text comes in pieces)."""

    def __init__(self, text: str | None = None) -> None:
        self.text = text
        self.cursor = 0

    def of(self, event: TtsEvent) -> list[dict[str, Any]]:
        sentence = event.text
        base = 0
        if self.text is not None:
            found = _find(self.text, sentence, self.cursor)
            base = found if found >= 0 else self.cursor
            self.cursor = base + len(sentence) if found >= 0 else self.cursor
        entries = [entry(sentence, event.begin_ms, event.end_ms, base, base + len(sentence), True)]
        at = 0
        for word in event.words or []:
            text = word.text.strip()
            found = _find(sentence, text, at) if text else -1
            begin, end = (found, found + len(text)) if found >= 0 else (at, at)
            at = end
            item = entry(text, word.begin_ms, word.end_ms, base + begin, base + end, False)
            entries.append(item)
        return entries


def entry(text: str, begin: int, end: int, first: int, last: int, sentence: bool) -> dict[str, Any]:
    return {
        "text": text,
        "begin_time": begin,
        "end_time": end,
        "begin_index": first,
        "end_index": last,
        "sentence": sentence,
        "phoneme_list": [],
    }
