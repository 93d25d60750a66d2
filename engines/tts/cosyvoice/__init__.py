"""CosyVoice TTS backend: v1 SFT presets, v2/v3 zero-shot cloning and instructions, streaming.

The official FunAudioLLM/CosyVoice checkout (COSYVOICE_DIR) provides the model code; this package
only adapts it to the TTS backend interface (engines/tts/base.py). docs/cosyvoice.md deploys it.
"""

from engines.tts.cosyvoice.backend import CosyVoiceBackend
from engines.tts.cosyvoice.config import CosyVoiceConfig

__all__ = ["CosyVoiceBackend", "CosyVoiceConfig"]
