"""Importing the official CosyVoice code from its checkout (COSYVOICE_DIR).

CosyVoice has no faithful PyPI package: deployments clone FunAudioLLM/CosyVoice at a pinned commit
and point COSYVOICE_DIR at it. We put the checkout (and its third_party/Matcha-TTS, unless PyPI
matcha-tts is installed) on sys.path, import `cosyvoice.cli.cosyvoice` and find out which of the
two API generations it speaks:
- prompt audio as a path (`prompt_wav`), since upstream 622a3a1 (2025-12): we hand it a WAV file;
- prompt audio as a 16 kHz tensor (`prompt_speech_16k`), releases before that: we hand it one.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import soundfile as sf

from engines.asr.base import ModelNotFound

log = logging.getLogger(__name__)

# The commit docs/cosyvoice.md installs and the integration test ran against.
PINNED_COMMIT = "ace7c47f41bbd303aa6bf1ea80e6f9fbd595cd40"
REPO_URL = "https://github.com/FunAudioLLM/CosyVoice"
_HOWTO = f"see docs/cosyvoice.md (git clone {REPO_URL}, checkout {PINNED_COMMIT[:7]})"
CLASS_NAMES = {"v1": "CosyVoice", "v2": "CosyVoice2", "v3": "CosyVoice3"}


@dataclass(frozen=True, slots=True)
class Upstream:
    root: Path
    module: ModuleType  # cosyvoice.cli.cosyvoice
    prompt_as_path: bool  # True: prompt_wav (path); False: prompt_speech_16k (tensor)

    def model_class(self, kind: str) -> type:
        cls = getattr(self.module, CLASS_NAMES[kind], None)
        if cls is None:
            raise ModelNotFound(
                f"the CosyVoice checkout at {self.root} has no {CLASS_NAMES[kind]} class "
                f"(too old for this model); {_HOWTO}"
            )
        return cls


def _checkout(cosyvoice_dir: str) -> Path:
    if not cosyvoice_dir:
        raise ModelNotFound(
            "COSYVOICE_DIR is not set: TTS_BACKEND=cosyvoice needs the official CosyVoice "
            f"repository checked out on this machine; {_HOWTO}"
        )
    root = Path(cosyvoice_dir).expanduser()
    if not root.is_dir():
        raise ModelNotFound(f"COSYVOICE_DIR={cosyvoice_dir!r} does not exist; {_HOWTO}")
    if not (root / "cosyvoice" / "cli" / "cosyvoice.py").is_file():
        raise ModelNotFound(
            f"COSYVOICE_DIR={cosyvoice_dir!r} is not a CosyVoice checkout "
            f"(no cosyvoice/cli/cosyvoice.py in it); {_HOWTO}"
        )
    return root.resolve()


def _forget_other_copies(root: Path) -> None:
    """A `cosyvoice` imported from elsewhere (a PyPI shell, another checkout) must not win."""
    mod = sys.modules.get("cosyvoice")
    where = getattr(mod, "__file__", None) or ""
    if mod is not None and not Path(where).resolve().is_relative_to(root):
        log.warning("dropping cosyvoice imported from %s in favour of %s", where, root)
        for name in [n for n in sys.modules if n == "cosyvoice" or n.startswith("cosyvoice.")]:
            del sys.modules[name]


def _prompt_as_path(module: ModuleType, root: Path) -> bool:
    cls = getattr(module, "CosyVoice2", None) or getattr(module, "CosyVoice", None)
    add = getattr(cls, "add_zero_shot_spk", None)
    if add is None:
        raise ModelNotFound(
            f"the CosyVoice checkout at {root} has no add_zero_shot_spk (older than 2025-04); "
            + _HOWTO
        )
    params = inspect.signature(add).parameters
    if "prompt_wav" in params:
        return True
    if "prompt_speech_16k" in params:
        return False
    raise ModelNotFound(
        f"the CosyVoice checkout at {root} has an unknown add_zero_shot_spk signature "
        f"{list(params)}; {_HOWTO}"
    )


def import_upstream(cosyvoice_dir: str) -> Upstream:
    """Put the checkout on sys.path and import it; ModelNotFound says what is missing."""
    root = _checkout(cosyvoice_dir)
    paths = [root]
    matcha = root / "third_party" / "Matcha-TTS"
    if (matcha / "matcha").is_dir():
        paths.append(matcha)
    for p in reversed(paths):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    _forget_other_copies(root)
    try:
        module = importlib.import_module("cosyvoice.cli.cosyvoice")
    except ModuleNotFoundError as e:
        hint = (
            "Matcha-TTS is missing: `git submodule update --init` in the checkout or "
            "`pip install matcha-tts==0.0.7.2`"
            if (e.name or "").startswith("matcha")
            else f"install CosyVoice's Python dependencies into this environment; {_HOWTO}"
        )
        raise ModelNotFound(f"cannot import CosyVoice from {root}: {e}; {hint}") from e
    except Exception as e:
        raise ModelNotFound(
            f"cannot import CosyVoice from {root}: {type(e).__name__}: {e}; {_HOWTO}"
        ) from e
    upstream = Upstream(root, module, _prompt_as_path(module, root))
    if upstream.prompt_as_path:
        _ensure_wav_loader()
    log.info(
        "CosyVoice code from %s (prompt API: %s)",
        root,
        "path" if upstream.prompt_as_path else "16 kHz tensor",
    )
    return upstream


def _soundfile_load_wav(wav: Any, target_sr: int, min_sr: int = 16000) -> Any:
    """upstream `load_wav` semantics (mono mix, resample) without torchaudio's audio I/O."""
    import torch
    import torchaudio

    data, sr = sf.read(wav, dtype="float32", always_2d=True)
    speech = torch.from_numpy(np.ascontiguousarray(data.T)).mean(dim=0, keepdim=True)
    if sr != target_sr:
        if sr < min_sr:
            raise ValueError(f"wav sample rate {sr} must be at least {min_sr}")
        speech = torchaudio.transforms.Resample(orig_freq=sr, new_freq=target_sr)(speech)
    return speech


def _ensure_wav_loader() -> None:
    """torchaudio >= 2.9 reads audio only through torchcodec; upstream's `load_wav` calls
    torchaudio.load. When that fails here, the frontend reads prompts with soundfile instead."""
    frontend = sys.modules.get("cosyvoice.cli.frontend")
    if frontend is None or not callable(getattr(frontend, "load_wav", None)):
        return
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        sf.write(f.name, np.zeros(1600, dtype=np.float32), 16000)
        try:
            frontend.load_wav(f.name, 16000)
            return
        except Exception as e:
            log.warning("upstream load_wav fails (%s); reading prompts with soundfile", e)
    frontend.load_wav = _soundfile_load_wav
