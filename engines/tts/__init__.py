"""TTS backends. Each is a module behind engines.tts.base.TtsBackend."""

from __future__ import annotations

from concurrent.futures import Executor
from typing import TYPE_CHECKING

from bus.voices import resolve_voice
from engines.tts.base import TtsBackend

__all__ = ["create_tts_backend", "resolve_voice"]

if TYPE_CHECKING:
    from funspeech.settings import Settings


def create_tts_backend(settings: Settings, device: str, executor: Executor) -> TtsBackend:
    """The backend TTS_BACKEND names; heavy imports happen only for the one chosen."""
    if settings.tts_backend == "cosyvoice":
        from engines.tts.cosyvoice import CosyVoiceBackend

        return CosyVoiceBackend(settings, device, executor)
    from engines.tts.light import LightTtsBackend

    return LightTtsBackend(settings, device, executor)
