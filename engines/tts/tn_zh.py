"""Mandarin text normalization for TTS: wetext's TN grammar (FSTs ship in the wheel, offline)
with a few fixes around it, and cn2an as the fallback if wetext fails on an input."""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

log = logging.getLogger(__name__)

_SYMBOLS = {"&": "和", "＆": "和", "@": "艾特", "＠": "艾特", "×": "乘", "÷": "除以", "‰": "千分之"}
_CURRENCY = {"$": "美元", "＄": "美元", "€": "欧元", "£": "英镑", "¥": "元", "￥": "元"}


@functools.cache
def _wetext() -> Any:
    from wetext import Normalizer

    return Normalizer(lang="zh", operator="tn")


def _money(m: re.Match[str]) -> str:
    unit = _CURRENCY[m[1]]
    rest = m[3] or ""
    return m[2] + (rest if rest.startswith(unit) else unit + rest)


def _prepare(text: str) -> str:
    text = re.sub(r"(?<=\d)[,，](?=\d{3}(?!\d))", "", text)
    text = re.sub(r"([$＄€£¥￥])\s?(\d+(?:\.\d+)?)([元块]?)", _money, text)
    text = re.sub(r"(?<=\d)\s?[~～]\s?(?=\d)", "到", text)
    for sym, word in _SYMBOLS.items():
        text = text.replace(sym, word)
    return text


def _fallback(text: str) -> str:
    import cn2an

    try:
        return str(cn2an.transform(text, "an2cn"))
    except Exception:
        return re.sub(r"\d", lambda m: "零一二三四五六七八九"[int(m[0])], text)


def normalize_zh(text: str) -> str:
    text = _prepare(text)
    if not re.search(r"[\d%％℃°]", text):
        return text
    try:
        out = str(_wetext().normalize(text))
    except Exception as exc:  # the grammar rejects some inputs: read digits some other way
        log.debug("wetext failed on %r: %s", text, exc)
        out = _fallback(text)
    return _fallback(out) if re.search(r"\d", out) else out
