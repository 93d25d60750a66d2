"""Word and character error rates for recognition tests (Levenshtein over normalised tokens).

Normalisation: lower case, punctuation (ASCII and CJK) removed, whitespace collapsed. WER splits on
whitespace; CER counts characters with all whitespace removed (the Mandarin measure).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    kept = [" " if unicodedata.category(c)[0] in "PZ" else c for c in text]
    return " ".join("".join(kept).split())


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def wer(reference: str, hypothesis: str) -> float:
    ref, hyp = normalize(reference).split(), normalize(hypothesis).split()
    return edit_distance(ref, hyp) / max(1, len(ref))


def cer(reference: str, hypothesis: str) -> float:
    ref, hyp = normalize(reference).replace(" ", ""), normalize(hypothesis).replace(" ", "")
    return edit_distance(ref, hyp) / max(1, len(ref))
