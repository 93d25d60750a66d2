"""Strip a WAV header from streamed audio: clients send one RIFF header at the start of the
stream (or, like some FunSpeech clients, one per frame); what follows is PCM."""

from __future__ import annotations

import struct

MAX_HEADER = 64 * 1024


class WavStripper:
    """feed(frame) -> the PCM bytes it carries. With sniff_only, frames are PCM unless one
    starts with a RIFF/WAVE header, which is removed."""

    def __init__(self, sniff_only: bool = False) -> None:
        self.sniff_only = sniff_only
        self._pending = b""
        self._in_header = not sniff_only

    def feed(self, frame: bytes) -> bytes:
        if frame[:4] == b"RIFF" and frame[8:12] == b"WAVE":
            self._in_header = True
            self._pending = b""
        if not self._in_header:
            return frame
        self._pending += frame
        pcm = self._after_header(self._pending)
        if pcm is None:
            if len(self._pending) > MAX_HEADER or (
                self._pending[:4] != b"RIFF"[: len(self._pending)]
            ):
                # not a WAV header after all: pass the bytes through as PCM
                pcm, self._pending, self._in_header = self._pending, b"", False
                return pcm
            return b""
        self._pending, self._in_header = b"", False
        return pcm

    @staticmethod
    def _after_header(buf: bytes) -> bytes | None:
        """The bytes after the `data` chunk header, or None if the header is incomplete."""
        if len(buf) < 12:
            return None
        pos = 12
        while pos + 8 <= len(buf):
            chunk_id = buf[pos : pos + 4]
            (size,) = struct.unpack("<I", buf[pos + 4 : pos + 8])
            if chunk_id == b"data":
                return buf[pos + 8 :]
            pos += 8 + size + (size & 1)
        return None
