"""ASR backends. Each is a module behind engines.asr.base.AsrBackend."""

from __future__ import annotations

from concurrent.futures import Executor
from typing import TYPE_CHECKING

from engines.asr.base import AsrBackend

if TYPE_CHECKING:
    from funspeech.settings import Settings


def create_asr_backend(settings: Settings, device: str, executor: Executor) -> AsrBackend:
    """The backend ASR_BACKEND names; heavy imports happen only for the one chosen."""
    if settings.asr_backend == "funasr":
        from engines.asr.funasr_backend import FunAsrBackend

        return FunAsrBackend(settings, device, executor)
    from engines.asr.light import LightAsrBackend

    return LightAsrBackend(settings, device, executor)
