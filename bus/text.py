"""Joining recognised sentences into one text."""

from __future__ import annotations

from collections.abc import Iterable


def _no_space(ch: str) -> bool:
    """Scripts written without spaces between sentences (CJK, kana; not Hangul)."""
    code = ord(ch)
    return code >= 0x2E80 and not (0xAC00 <= code <= 0xD7AF or 0x3130 <= code <= 0x318F)


def join_texts(texts: Iterable[str]) -> str:
    """Sentence texts -> one text: a space between sentences, none between CJK ones."""
    out = ""
    for text in texts:
        text = text.strip()
        if not text:
            continue
        if out and not _no_space(out[-1]) and not _no_space(text[0]):
            out += " "
        out += text
    return out
