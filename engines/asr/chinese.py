"""Chinese script of recognition results (ASR_CHINESE_SCRIPT), converted with OpenCC.

NLS and FunASR write simplified Chinese, and clients of this service expect it; Whisper writes
traditional characters for Mandarin unless prompted otherwise. OpenCC (the `opencc` wheel,
Apache-2.0) converts phrase by phrase with its maintained dictionaries (t2s: 頭髮 -> 头发,
乾淨 -> 干净 but 乾隆 stays). Text without Han characters is returned untouched.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from funspeech.settings import ChineseScript

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_CONFIGS = {"simplified": "t2s", "traditional": "s2t"}
_converters: dict[str, Any] = {}
_lock = threading.Lock()  # one converter per direction, shared by event loop and workers


def _converter(config: str) -> Any:
    conv = _converters.get(config)
    if conv is None:
        import opencc

        conv = _converters.setdefault(config, opencc.OpenCC(config))
    return conv


def to_script(text: str, script: ChineseScript) -> str:
    """`text` with its Chinese characters in `script` ("original": unchanged)."""
    config = _CONFIGS.get(script)
    if config is None or not text or not _HAN.search(text):
        return text
    with _lock:
        return str(_converter(config).convert(text))
