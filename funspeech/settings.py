"""All configuration, read from the environment (names as in the FunSpeech reference)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_pool_size() -> int:
    return max(4, os.cpu_count() or 1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # --- bridge (HTTP / WebSocket edge)
    host: str = "0.0.0.0"
    port: int = 8000
    debug: bool = False  # true: OpenAPI reference at /docs
    workers: int = Field(1, ge=1)  # bridge processes sharing PORT (SO_REUSEPORT)
    log_level: str = "INFO"
    log_file: str = "logs/funspeech.log"  # "" = stdout only
    log_max_bytes: int = 20 * 1024 * 1024
    log_backup_count: int = 50

    # --- auth: unset or empty = that check is off
    apptoken: str | None = None
    appkey: str | None = None

    # --- bus
    nats_url: str = "nats://127.0.0.1:4222"
    nats_store_dir: str = "data/nats"  # JetStream store of the nats-server the launcher starts
    data_dir: str = "data"

    # --- ASR engines
    asr_backend: Literal["light", "funasr"] = "light"
    asr_gpus: str = ""  # "" or auto | cpu | 0 | 0,1,...: one engine process per device
    asr_model_mode: Literal["all", "offline", "realtime"] = "all"
    asr_max_sessions: int = Field(0, ge=0)  # per engine; 0 = the backend's own figure
    asr_light_model: str = "whisper-base"  # whisper-base | whisper-tiny.en
    # light engine tuning (faster-whisper on the CPU); 0 = auto
    asr_light_models: str = ""  # comma list to load; "" = the default + every installed one
    asr_light_cpu_threads: int = Field(0, ge=0)  # threads per decode; 0 = min(cores, 4)
    asr_light_decode_slots: int = Field(0, ge=0)  # decodes at once; 0 = max(2, cores // threads)
    asr_light_beam_size: int = Field(1, ge=1)
    asr_light_partial_interval: float = Field(1.0, gt=0)  # s of audio between partials, unloaded
    asr_light_partial_max_queue: int = Field(2, ge=0)  # no partial while more decodes wait
    asr_light_fast_en_partials: bool = True  # English partials from whisper-tiny.en if loaded
    asr_light_max_sentence_s: float = Field(25.0, ge=2, le=29)  # hard cut (Whisper: 30 s window)
    asr_enable_realtime_punc: bool = False
    auto_load_custom_asr_models: str = ""
    asr_enable_nearfield_filter: bool = True
    asr_nearfield_rms_threshold: float = 0.01
    asr_nearfield_filter_log_enabled: bool = True
    inference_thread_pool_size: int = Field(default_factory=_default_pool_size, ge=1)

    # FunASR models: a local directory or a ModelScope id looked up under MODELSCOPE_PATH
    modelscope_path: str = str(Path.home() / ".cache" / "modelscope" / "hub")
    funasr_realtime_model: str = (
        "iic/speech_paraformer-large_asr_nat-zh-cn-16k-common-vocab8404-online"
    )
    funasr_offline_model: str = (
        "iic/speech_paraformer-large_asr_nat-zh-cn-16k-common-vocab8404-pytorch"
    )
    vad_model: str = "iic/speech_fsmn_vad_zh-cn-16k-common-pytorch"
    punc_model: str = "iic/punc_ct-transformer_zh-cn-common-vocab272727-pytorch"
    punc_realtime_model: str = "iic/punc_ct-transformer_zh-cn-common-vad_realtime-vocab272727"
    # FunASR engine tuning (engines/asr/funasr_backend.py)
    funasr_stream_batching: bool = True  # batch streaming steps of concurrent sessions
    funasr_share_fbank: bool = True  # compute a session's fbank frames once for VAD/ASR/2-pass
    funasr_fbank: Literal["fast", "funasr"] = "fast"  # fbank implementation (funasr_fbank.py)
    funasr_batch_finals: bool = False  # pad 2-pass finals of sessions into one decode (GPU)
    funasr_max_batch: int = Field(32, ge=1)  # sessions per batched model call
    funasr_batch_wait_ms: float = Field(50.0, ge=0)  # gather window for a batch of steps
    funasr_realtime_threads: int = Field(1, ge=0)  # threads for realtime model work; 0 = shared
    funasr_ncpu: int = Field(0, ge=0)  # torch CPU threads; 0 = 1
    funasr_offline_batch_s: float = Field(300.0, gt=0)  # padded audio per offline decode call
    funasr_oneshot_vad_s: float = Field(30.0, ge=0)  # one-shot audio longer: always VAD-split

    # --- limits and timeouts (seconds unless named otherwise)
    max_audio_size: int = 100 * 1024 * 1024  # bytes, one-shot bodies and downloads
    asr_max_duration: float = 60.0  # one-shot /stream/v1/asr (NLS one-sentence limit)
    asr_idle_timeout: float = 10.0  # realtime session without audio -> 40000004
    asr_open_timeout: float = 3.0  # no engine takes the session -> 40000005
    asr_result_timeout: float = 120.0  # bound on waiting for a one-shot result
    engine_drain_timeout: float = 30.0  # SIGTERM: time given to live sessions
    audio_download_timeout: float = 30.0  # audio_address downloads, whole transfer
    http_body_timeout: float = 120.0  # reading one request body / multipart upload
    # audio_address may point at loopback/private/link-local hosts (off: SSRF guard)
    asr_allow_private_audio_address: bool = False

    @field_validator("apptoken", "appkey", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        return None if v == "" else v

    def asr_devices(self) -> list[str]:
        """ASR_GPUS -> engine devices: "" / auto -> cuda:0 when available else cpu."""
        raw = self.asr_gpus.strip().lower()
        if raw in ("", "auto"):
            return ["cuda:0" if _cuda_available() else "cpu"]
        if raw == "cpu":
            return ["cpu"]
        return [f"cuda:{g.strip()}" for g in raw.split(",") if g.strip().isdigit()] or ["cpu"]


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False
