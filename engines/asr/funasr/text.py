"""Text post-processing for FunASR results: hotword strings and ITN.

ITN uses `wetext` (WeTextProcessing runtime: its zh/en ITN FSTs ship inside the wheel, so it works
offline, ~0.3 s to load, ~1 ms a sentence). When wetext is not installed ITN is a no-op (logged
once)."""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

_lock = threading.Lock()
_itn: dict[str, Any] = {}
_missing_logged = False


def _normalizer(lang: str) -> Any | None:
    global _missing_logged
    with _lock:
        if lang in _itn:
            return _itn[lang]
        try:
            from wetext import Normalizer
        except ImportError:
            if not _missing_logged:
                log.warning("enable_itn requested but wetext is not installed: ITN is off")
                _missing_logged = True
            _itn[lang] = None
            return None
        _itn[lang] = Normalizer(lang=lang, operator="itn")
        return _itn[lang]


def itn(text: str, language: str | None) -> str:
    """Inverse text normalisation (一百二十三 -> 123); English for language "en", else Chinese."""
    if not text:
        return text
    norm = _normalizer("en" if (language or "").lower().startswith("en") else "zh")
    return norm.normalize(text) if norm is not None else text


def hotword_arg(hotwords: list[str]) -> str | None:
    """FunASR's `hotword` string (space separated). FunASR reads a value ending in .txt as a
    file and one starting with http as a URL to download, so such words are dropped."""
    words = [
        w
        for hw in hotwords
        for w in hw.split()
        if not w.lower().startswith(("http:", "https:")) and not w.lower().endswith(".txt")
    ]
    return " ".join(words) or None


def safe_punc_input(text: str) -> str:
    """CT-Punc input: FunASR would fetch a text starting with http(s):// as a URL."""
    return " " + text if text.lower().startswith(("http://", "https://")) else text
