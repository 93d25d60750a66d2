"""The slice of the settings the CosyVoice backend reads, frozen at construction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from funspeech.settings import Settings

Mode = Literal["all", "sft", "clone"]
Kind = Literal["v1", "v2", "v3"]


@dataclass(frozen=True, slots=True)
class CosyVoiceConfig:
    cosyvoice_dir: str
    mode: Mode  # all: presets + clones; sft: presets only; clone: cloned voices only
    clone_kind: Kind  # v2 (CosyVoice2-0.5B) or v3 (Fun-CosyVoice3-0.5B-2512)
    sft_model: str
    clone_model: str
    modelscope_path: str
    load_trt: bool = False
    fp16: bool = False
    max_sessions: int = 0  # 0 = the backend's figure for its device
    prompt_cache: int = 256
    chunk_timeout: float = 120.0  # s without audio from a running synthesis -> error

    @property
    def clone_setting(self) -> str:
        """The environment name of the clone model setting, for messages."""
        return "COSYVOICE3_MODEL_ID" if self.clone_kind == "v3" else "CLONE_MODEL_ID"

    @classmethod
    def from_settings(cls, s: Settings) -> CosyVoiceConfig:
        v3 = s.clone_model_version == "cosyvoice3"
        return cls(
            cosyvoice_dir=s.cosyvoice_dir,
            mode=s.tts_model_mode,
            clone_kind="v3" if v3 else "v2",
            sft_model=s.sft_model_id,
            clone_model=s.cosyvoice3_model_id if v3 else s.clone_model_id,
            modelscope_path=s.modelscope_path,
            load_trt=s.tts_load_trt,
            fp16=s.tts_enable_fp16,
            max_sessions=s.tts_max_sessions,
            prompt_cache=s.cosyvoice_prompt_cache,
            chunk_timeout=s.cosyvoice_chunk_timeout,
        )
