"""TTS text front end: sentence splitting (zh/en/ja), an incremental sentence buffer for text that
arrives token by token, per-sentence language detection and text normalization.

Lengths are measured in units that track speaking time: a CJK / kana / Hangul character counts 3
(about a syllable), anything else 1 (English reads ~15 characters a second).
"""

from __future__ import annotations

import itertools
import re
import unicodedata

from engines.tts.tn_en import normalize_en
from engines.tts.tn_zh import normalize_zh

MAX_UNITS = 150  # a sentence longer than this (~10 s of speech) is cut at clauses
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_KANA = "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f"
_HANGUL = "\uac00-\ud7af\u1100-\u11ff\u3130-\u318f"
_WIDE = re.compile(f"[{_HAN}{_KANA}{_HANGUL}]")
_RE_KANA, _RE_HANGUL, _RE_HAN = (re.compile(f"[{r}]") for r in (_KANA, _HANGUL, _HAN))
_RE_LATIN = re.compile(r"[A-Za-z]")
_SPEAKABLE = re.compile(rf"[\w{_HAN}{_KANA}{_HANGUL}]")

_STRONG = "。！？!?"  # always end a sentence (when followed by something else)
_CLOSERS = "\"'”’」』）)】》〉]"
_SOFT = "，,、；;：:—…"  # clause boundaries for cutting long sentences
_ABBREV = {
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "a.m", "p.m",
    "no", "fig", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov",
    "dec", "u.s", "inc", "ltd", "co", "approx",
}  # fmt: skip


def units(text: str) -> int:
    return len(text) + 2 * len(_WIDE.findall(text))


def detect_language(text: str, default: str | None = None) -> str | None:
    """Language of a sentence by script: kana -> ja, Hangul -> ko, Han -> zh (ja when the
    default is ja), Latin -> en; `default` when none of these occurs."""
    if _RE_KANA.search(text):
        return "ja"
    if _RE_HANGUL.search(text):
        return "ko"
    if _RE_HAN.search(text):
        return "ja" if default == "ja" else "zh"
    if _RE_LATIN.search(text):
        return "en"
    return default


def speakable(text: str) -> bool:
    return bool(_SPEAKABLE.search(text))


def _is_period_end(text: str, i: int, nxt: str) -> bool:
    """Is text[i] == "." a sentence end, given the character after the dots/closers?"""
    if nxt and not (nxt.isspace() or _WIDE.match(nxt)):
        return False  # 3.14, a.m, example.com
    word = re.search(r"([A-Za-z.]*)$", text[:i])
    token = word[1].lower().strip(".") if word else ""
    return not (token in _ABBREV or (len(token) == 1 and token.isalpha()))  # Dr. X, J. K. X


def _sentence_ends(text: str, final: bool) -> list[int]:
    """End offsets of the complete sentences in text. Unless `final`, a terminator is confirmed
    only by a character after it (closing quotes may still follow, "3." may become "3.5")."""
    ends: list[int] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            ends.append(i + 1)
        elif c in _STRONG or c == ".":
            j = i + 1
            while j < n and (text[j] in _STRONG or text[j] in _CLOSERS or text[j] == "."):
                j += 1
            if j == n and not final:
                break
            if c != "." or _is_period_end(text, j - 1, text[j] if j < n else ""):
                ends.append(j)
            i = j
            continue
        i += 1
    return ends


def soft_cuts(text: str) -> list[int]:
    """Offsets after clause punctuation (not inside numbers like 1,234 or 10:30)."""
    cuts = []
    for m in re.finditer(f"[{re.escape(_SOFT)}]+", text):
        before, after = text[m.start() - 1 : m.start()], text[m.end() : m.end() + 1]
        if before.isdigit() and after.isdigit():
            continue
        end = m.end()
        while end < len(text) and text[end] in _CLOSERS:
            end += 1
        cuts.append(end)
    return cuts


def _cut_points(text: str, max_units: int) -> list[int]:
    """Offsets splitting `text` into pieces of at most max_units where possible: at clause
    punctuation first, then between words, then (CJK only) between characters."""
    cuts, start = [], 0
    while units(text[start:]) > max_units:
        best = _last_fit([c for c in soft_cuts(text) if c > start], text, start, max_units)
        if best is None:
            spaces = [m.end() for m in re.finditer(r"\s+", text) if m.end() > start]
            best = _last_fit(spaces, text, start, max_units)
        if best is None:
            best = _hard_cut(text, start, max_units)
        if best is None or best >= len(text):
            break
        cuts.append(best)
        start = best
    return cuts


def _last_fit(candidates: list[int], text: str, start: int, max_units: int) -> int | None:
    fit = [c for c in candidates if c < len(text) and units(text[start:c]) <= max_units]
    return fit[-1] if fit else None


def _hard_cut(text: str, start: int, max_units: int) -> int | None:
    """Last CJK character boundary within max_units (never inside a Latin word)."""
    best, total = None, 0
    for i in range(start, len(text)):
        total += units(text[i])
        if total > max_units:
            break
        if _WIDE.match(text[i]) and i + 1 < len(text) and not text[i + 1].isascii():
            best = i + 1
    return best


def _pieces(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def clauses(sentence: str, max_units: int) -> list[str]:
    """A sentence cut into pieces of at most max_units where it can be (clause punctuation,
    then word boundaries), stripped; pieces with nothing to speak are dropped."""
    pieces = _pieces(sentence, _cut_points(sentence, max_units))
    return [p.strip() for p in pieces if speakable(p)]


def split_sentences(text: str, max_units: int = MAX_UNITS) -> list[str]:
    """Whole text -> sentences to synthesize one by one (long ones cut at clauses)."""
    out = []
    for piece in _pieces(text, _sentence_ends(text, final=True)):
        out += clauses(piece, max_units)
    return out


class SentenceBuffer:
    """Text pushed as it comes (LLM tokens) -> sentences as soon as they are complete. A long
    run without a sentence end is released at clause or word boundaries once it passes
    max_units; the open end of the buffer is never cut."""

    def __init__(self, max_units: int = MAX_UNITS) -> None:
        self.max_units = max_units
        self._text = ""

    @property
    def pending(self) -> str:
        return self._text

    def push(self, text: str) -> list[str]:
        self._text += text
        ends = _sentence_ends(self._text, final=False)
        out: list[str] = []
        for piece in _pieces(self._text, ends)[:-1]:
            out += clauses(piece, self.max_units)
        self._text = self._text[ends[-1] :] if ends else self._text
        if units(self._text) > self.max_units:
            pieces = _pieces(self._text, _cut_points(self._text, self.max_units))
            out += [p.strip() for p in pieces[:-1] if speakable(p)]
            self._text = pieces[-1]
        return out

    def flush(self) -> list[str]:
        rest, self._text = self._text, ""
        return split_sentences(rest, self.max_units)


_FULLWIDTH = {i: i - 0xFEE0 for i in range(0xFF01, 0xFF5F) if chr(i - 0xFEE0).isalnum()}
_FULLWIDTH.update({ord("％"): ord("%"), ord("＄"): ord("$"), ord("＆"): ord("&")})


def clean(text: str) -> str:
    """Full-width letters/digits to ASCII, control characters and emoji out, spaces collapsed.
    Everything a reader needs stays: apostrophes, %, $, &, CJK quotes, …, —."""
    text = text.translate(_FULLWIDTH)
    kept = []
    for c in text:
        cat = unicodedata.category(c)
        if c in "\n\t":
            kept.append(" ")
        elif cat[0] == "C" or (cat == "So" and c not in "℃℉°©®™"):
            continue
        else:
            kept.append(c)
    return re.sub(r"\s+", " ", "".join(kept)).strip()


def normalize(text: str, language: str | None) -> str:
    """Speakable text for one sentence: numbers, dates, times, money, units, symbols in words
    (zh: wetext TN; en: engines/tts/tn_en.py); other languages are only cleaned."""
    text = clean(text)
    if language == "zh":
        return normalize_zh(text)
    if language == "en":
        return normalize_en(text)
    return text
