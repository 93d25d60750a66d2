"""ASR backends, each a package behind engines.asr.base.AsrBackend: light/ (faster-whisper,
the default) and funasr/ (FunASR). Shared by both: base.py (the interface), buffer.py (a
stream's audio), chinese.py (the script of Chinese results)."""

from __future__ import annotations

from concurrent.futures import Executor
from typing import TYPE_CHECKING

from engines.asr.base import AsrBackend

if TYPE_CHECKING:
    from funspeech.settings import Settings


def create_asr_backend(settings: Settings, device: str, executor: Executor) -> AsrBackend:
    """The backend ASR_BACKEND names, given its own settings slice; heavy imports happen only
    for the one chosen."""
    if settings.asr_backend == "funasr":
        from engines.asr.funasr import FunAsrBackend

        return FunAsrBackend(settings.funasr(), device, executor)
    from engines.asr.light import LightAsrBackend

    return LightAsrBackend(settings.light_asr(), device, executor)
