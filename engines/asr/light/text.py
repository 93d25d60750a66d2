"""Text of Whisper results: punctuation, the zh prompt echo, confidence, word timings, and the
Chinese script (ASR_CHINESE_SCRIPT)."""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any

from bus.schemas import AsrParams, Word
from engines.asr.chinese import to_script
from funspeech.settings import ChineseScript

ZH_PROMPT = "以下是普通话的句子。"
_CJK = "\u3400-\u9fff"
_FULLWIDTH = {",": "，", "?": "？", "!": "！", ":": "：", ";": "；"}


def strip_punctuation(text: str) -> str:
    """Drop punctuation, keeping in-word apostrophes, number separators and %."""
    out = []
    for i, c in enumerate(text):
        prev, nxt = text[i - 1 : i], text[i + 1 : i + 2]
        keep = (
            not unicodedata.category(c).startswith("P")
            or c == "%"
            or (c in "'’" and prev.isalpha() and nxt.isalpha())
            or (c in ".,:" and prev.isdigit() and nxt.isdigit())
        )
        out.append(c if keep else " ")
    joined = " ".join("".join(out).split())
    return re.sub(f"(?<=[{_CJK}]) (?=[{_CJK}])", "", joined)


def polish(text: str, options: AsrParams, script: ChineseScript) -> str:
    """Whisper's text as clients get it: trimmed, the prompt echo dropped, Chinese in `script`,
    punctuation stripped or made full-width next to Chinese."""
    text = to_script(text.strip(), script)
    if strip_punctuation(text) == strip_punctuation(ZH_PROMPT):  # the prompt echoed on noise
        return ""
    if not options.enable_punctuation:
        return strip_punctuation(text)
    return re.sub(f"(?<=[{_CJK}])[,?!:;]", lambda m: _FULLWIDTH[m.group()], text)


def confidence(segments: list[Any]) -> float | None:
    if not segments:
        return None
    mean = sum(s.avg_logprob for s in segments) / len(segments)
    return min(1.0, max(0.0, math.exp(mean)))


def words(
    segments: list[Any], offset: int, lo: int, hi: int, options: AsrParams, script: ChineseScript
) -> list[Word]:
    out = []
    for seg in segments:
        for w in seg.words or []:
            raw = to_script(w.word, script)
            text = raw.strip() if options.enable_punctuation else strip_punctuation(raw)
            if strip_punctuation(text):  # no pure-punctuation "words"
                begin = min(hi, max(lo, offset + round(w.start * 1000)))
                out.append(
                    Word(
                        text=text,
                        begin_ms=begin,
                        end_ms=min(hi, max(begin, offset + round(w.end * 1000))),
                    )
                )
    return out
