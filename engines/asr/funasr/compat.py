"""The FunASR releases that FunSpeech's FunASR-internal code is tested with.

Several modules here read or replace FunASR internals that change between releases: fbank.py
wraps `funasr.frontends.wav_frontend.kaldi`; frontend.py re-implements
`WavFrontendOnline.forward` for a steady chunk; batch.py and vad.py re-implement the streaming
Paraformer and FSMN-VAD steps over stacked per-session caches. They are used only with a FunASR
release inside TESTED (tests/test_funasr_backend.py checks each against FunASR's own path). With
any other release the backend logs a warning and runs FunASR's own inference, one session per
call, with FunASR's own fbank: slower, and nothing depends on internals nobody has checked.
Widen TESTED (and the `funasr` pin in pyproject.toml) only after the FunASR tests pass on it.
"""

from __future__ import annotations

import logging
import re
from importlib import metadata

log = logging.getLogger(__name__)

TESTED = ((1, 4, 5), (1, 4, 16))  # lowest and highest release the tests passed on


def _release(version: str) -> tuple[int, ...]:
    """(1, 4, 16) for "1.4.16", "1.4.16.post1", "1.4.16rc1"."""
    m = re.match(r"\d+(\.\d+)*", version.strip())
    return tuple(int(p) for p in m.group().split(".")) if m else ()


def installed_funasr() -> str | None:
    try:
        return metadata.version("funasr")
    except metadata.PackageNotFoundError:
        return None


def is_tested(version: str | None) -> bool:
    if not version:
        return False
    release = _release(version)[:3]
    return TESTED[0] <= release <= TESTED[1]


def tested_range() -> str:
    lo, hi = (".".join(map(str, v)) for v in TESTED)
    return lo if lo == hi else f"{lo} to {hi}"


def internals_usable(version: str | None = None) -> bool:
    """True when FunSpeech's FunASR-internal fast paths may run on this FunASR; else warn."""
    version = version if version is not None else installed_funasr()
    if is_tested(version):
        return True
    log.warning(
        "funasr %s is outside the tested range (%s): shared fbank frames and cross-session "
        "batching are off, every model step runs FunASR's own inference (slower). Install a "
        "tested release: pip install 'funspeech[funasr]'",
        version or "(unknown version)",
        tested_range(),
    )
    return False
