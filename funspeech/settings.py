"""All configuration, read from the environment (names as in the FunSpeech reference)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
_HEALTH_TASKS = r"^\s*(auto|((asr|tts)\s*(,\s*(asr|tts)\s*)*)?)\s*$"  # HEALTH_TASKS


class SettingsError(SystemExit):
    """Invalid settings: one line per bad variable, and the process ends (exit code 1) without
    a traceback when nothing catches it."""

    def __init__(self, exc: ValidationError) -> None:
        lines: dict[str, str] = {}
        for err in exc.errors():
            name = str(err["loc"][0]).upper() if err["loc"] else "settings"
            shown = f"={err['input']!r}" if err["type"] != "missing" else ""
            lines.setdefault(name, f"invalid setting {name}{shown}: {err['msg']}")
        super().__init__("\n".join(lines.values()))


def _default_pool_size() -> int:
    return max(4, os.cpu_count() or 1)


ChineseScript = Literal["simplified", "traditional", "original"]


class _Slice(BaseModel):
    model_config = ConfigDict(frozen=True)


class AsrCommonSettings(_Slice):
    """What every ASR backend reads (ASR_* names)."""

    model_mode: Literal["all", "offline", "realtime"]
    max_sessions: int
    chinese_script: ChineseScript
    nearfield_filter: bool
    nearfield_rms_threshold: float
    nearfield_filter_log: bool


class LightAsrSettings(AsrCommonSettings):
    """The light backend's slice (ASR_LIGHT_*, DATA_DIR)."""

    data_dir: Path
    model: str
    models: str
    cpu_threads: int
    decode_slots: int
    beam_size: int
    partial_interval: float
    partial_max_queue: int
    fast_en_partials: bool
    max_sentence_s: float
    speech_gate: bool


class FunAsrSettings(AsrCommonSettings):
    """The FunASR backend's slice (FUNASR_*, model ids, MODELSCOPE_PATH)."""

    modelscope_path: str
    realtime_model: str
    offline_model: str
    vad_model: str
    punc_model: str
    punc_realtime_model: str
    enable_realtime_punc: bool
    chunk_ms: int
    stream_batching: bool
    share_fbank: bool
    fbank: Literal["fast", "funasr"]
    batch_finals: bool
    max_batch: int
    batch_wait_ms: float
    realtime_threads: int
    ncpu: int
    offline_batch_s: float
    oneshot_vad_s: float


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # --- bridge (HTTP / WebSocket edge)
    host: str = "0.0.0.0"
    port: int = 8000
    debug: bool = False  # true: OpenAPI reference at /docs
    console_enabled: bool = True  # the web console at /console (bridge/console.py)
    console_redirect_root: bool = True  # a browser's GET / (Accept: text/html) -> /console/
    workers: int = Field(1, ge=1)  # bridge processes sharing PORT (SO_REUSEPORT)
    log_level: LogLevel = "INFO"
    log_file: str = "logs/funspeech.log"  # "" = stdout only
    # added to each process's log file name; "hostname" = the host's (a container's) name
    log_instance: str = ""
    log_max_bytes: int = 20 * 1024 * 1024
    log_backup_count: int = 50
    access_log: bool = False  # bridge: one INFO line per HTTP request (funspeech.bridge.access)
    log_format: Literal["text", "json"] = "text"  # json: one object per line, session ids as fields
    metrics_enabled: bool = True  # bridge: Prometheus metrics at /metrics
    # tasks without a live engine make /health answer 503: comma list of asr, tts; "auto" = both,
    # less a task whose ASR_GPUS / TTS_GPUS is "none"; "" = NATS only
    health_tasks: str = Field("auto", pattern=_HEALTH_TASKS)
    bridge_drain_timeout: float = Field(30.0, ge=0)  # SIGTERM: time live requests get to finish
    # browsers may call the API from these origins (comma list; * = any, without credentials)
    cors_allow_origins: str = ""
    cors_allow_credentials: bool = False  # Access-Control-Allow-Credentials for listed origins
    # external base URL of the service for links it hands out (async TTS audio_address);
    # "" = the scheme and host a request came to (X-Forwarded-Proto / -Host when a proxy sets them)
    public_url: str = Field("", pattern=r"^(https?://[^/?#\s]+(/[^?#\s]*)?)?$")

    # --- auth: unset or empty = that check is off
    apptoken: str | None = None
    appkey: str | None = None

    # --- bus
    nats_url: str = "nats://127.0.0.1:4222"
    # keeps deployments apart on one NATS: subjects <ns>.fs.v1.*, services <ns>-funspeech-asr
    funspeech_namespace: str = Field("", pattern=r"^[A-Za-z0-9_-]*$")
    # JetStream copies of voices, async jobs and their audio (3 on a 3-node cluster)
    jetstream_replicas: int = Field(1, ge=1, le=5)
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
    asr_light_speech_gate: bool = True  # one-shot audio without speech (Silero VAD) is not decoded
    asr_enable_realtime_punc: bool = False
    # Chinese text in results: simplified (as NLS and FunASR write it; Whisper often writes
    # traditional), traditional, or original = as the model wrote it (OpenCC converts)
    asr_chinese_script: ChineseScript = "simplified"
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
    # FunASR engine tuning (engines/asr/funasr/)
    # streaming step: partials every N ms of audio (look-ahead stays 300 ms)
    funasr_chunk_ms: int = 600  # 240 | 480 | 600
    funasr_stream_batching: bool = True  # batch streaming steps of concurrent sessions
    funasr_share_fbank: bool = True  # compute a session's fbank frames once for VAD/ASR/2-pass
    funasr_fbank: Literal["fast", "funasr"] = "fast"  # fbank implementation (funasr/fbank.py)
    funasr_batch_finals: bool = False  # pad 2-pass finals of sessions into one decode (GPU)
    funasr_max_batch: int = Field(32, ge=1)  # sessions per batched model call
    funasr_batch_wait_ms: float = Field(50.0, ge=0)  # gather window for a batch of steps
    funasr_realtime_threads: int = Field(1, ge=0)  # threads for realtime model work; 0 = shared
    funasr_ncpu: int = Field(0, ge=0)  # torch CPU threads; 0 = 1
    funasr_offline_batch_s: float = Field(300.0, gt=0)  # padded audio per offline decode call
    funasr_oneshot_vad_s: float = Field(30.0, ge=0)  # one-shot audio longer: always VAD-split

    # --- TTS engines
    tts_backend: Literal["light", "cosyvoice"] = "light"
    tts_gpus: str = ""  # as ASR_GPUS: one TTS engine process per device
    tts_max_sessions: int = Field(0, ge=0)  # syntheses per engine; 0 = the backend's own figure
    tts_async_retention: float = Field(7 * 86400, gt=0)  # s: async jobs and audio kept (NLS: 7 d)
    tts_async_part_chars: int = Field(400, ge=50)  # async text is split in parts this long
    # bridge: text limits (characters) of POST /stream/v1/tts and WS SpeechSynthesizer, and of
    # SpeechLongSynthesizer and one RunSynthesis (GET /stream/v1/tts: 300, NLS)
    tts_max_text_length: int = Field(1000, ge=1)
    tts_long_max_text_length: int = Field(100_000, ge=1)
    tts_stall_timeout: float = Field(60.0, gt=0)  # s without audio or event from the engine
    tts_rest_mpeg_content_type: bool = False  # Content-Type audio/mpeg for every format (as NLS)
    voices_dir: str = "voices"  # name.wav + name.txt imported as cloned voices (start, refresh)
    # async results (docs/tts-async.md): signed download links, notify_url callbacks
    tts_async_link_secret: str | None = None  # HMAC key of download links; "" = from APPTOKEN
    tts_async_link_ttl: float = Field(86400.0, gt=0)  # s a signed download link stays valid
    tts_async_allow_private_notify: bool = False  # notify_url may be loopback/private/link-local
    tts_async_notify_attempts: int = Field(8, ge=1)  # callback tries before giving up
    tts_async_notify_backoff: float = Field(2.0, gt=0)  # s before the 2nd try; doubles (<= 10 min)
    tts_async_notify_timeout: float = Field(10.0, gt=0)  # s for one callback request
    # light engine (Kokoro-82M int8 + Piper joe on onnxruntime, CPU); 0 = auto
    tts_light_cpu_threads: int = Field(0, ge=0)  # threads per model run; 0 = min(cores, 4)
    tts_light_slots: int = Field(0, ge=0)  # model runs at once; 0 = max(1, cores // threads)
    tts_light_chunk_units: int = Field(60, ge=10)  # a sentence is synthesized in clauses this long
    tts_light_first_chunk_units: int = Field(30, ge=0)  # shorter first clause; 0 = off
    tts_light_warmup: bool = True  # one short synthesis per model at load (first-request latency)

    # --- CosyVoice TTS backend (TTS_BACKEND=cosyvoice; docs/cosyvoice.md)
    cosyvoice_dir: str = ""  # checkout of FunAudioLLM/CosyVoice at the pinned commit
    # all: presets + clones; sft (alias cosyvoice1): presets only; clone (alias cosyvoice2):
    # cloned voices only
    tts_model_mode: Literal["all", "sft", "clone"] = "all"
    clone_model_version: Literal["cosyvoice2", "cosyvoice3"] = "cosyvoice3"
    # each a local directory or a ModelScope id already in the MODELSCOPE_PATH cache
    sft_model_id: str = "iic/CosyVoice-300M-SFT"
    clone_model_id: str = "iic/CosyVoice2-0.5B"
    cosyvoice3_model_id: str = "FunAudioLLM/Fun-CosyVoice3-0.5B-2512"
    tts_load_trt: bool = False  # TensorRT flow decoder (+ JIT parts for v1/v2); CUDA only
    tts_enable_fp16: bool = False  # CUDA only
    cosyvoice_prompt_cache: int = Field(256, ge=1)  # processed clone prompts kept per engine
    cosyvoice_chunk_timeout: float = Field(120.0, gt=0)  # s without audio -> synthesis error

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

    # --- launcher (`funspeech`): supervision of the processes it starts
    # restarts in a row of a child that does not come up and stay up; one more exit ends all
    launcher_restart_limit: int = Field(5, ge=0)
    launcher_restart_backoff: float = Field(0.5, gt=0)  # s before the 2nd restart; doubles
    launcher_restart_backoff_max: float = Field(10.0, gt=0)  # s, cap of that delay
    launcher_stable_s: float = Field(10.0, gt=0)  # s up (and ready) that count as recovered
    launcher_start_timeout: float = Field(600.0, gt=0)  # s for every engine to register

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(exc) from None

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_upper(cls, v: object) -> object:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("tts_model_mode", mode="before")
    @classmethod
    def _tts_mode_alias(cls, v: object) -> object:
        """The issue's names for the modes: cosyvoice1 = presets, cosyvoice2 = clones."""
        if isinstance(v, str):
            v = v.strip().lower()
            return {"cosyvoice1": "sft", "cosyvoice2": "clone"}.get(v, v)
        return v

    @field_validator("funasr_chunk_ms")
    @classmethod
    def _tested_chunk(cls, v: int) -> int:
        if v not in (240, 480, 600):
            raise ValueError("FUNASR_CHUNK_MS must be 240, 480 or 600")
        return v

    @field_validator("apptoken", "appkey", "tts_async_link_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("cors_allow_credentials")
    @classmethod
    def _cors_wildcard_without_credentials(cls, v: bool, info: ValidationInfo) -> bool:
        origins = str(info.data.get("cors_allow_origins", "")).split(",")
        if v and "*" in (o.strip() for o in origins):
            raise ValueError("cannot be combined with CORS_ALLOW_ORIGINS=*: list the origins")
        return v

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, v: str) -> str:
        return v.rstrip("/")

    def cors_origins(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_allow_origins.split(",") if o.strip()]

    def _asr_common(self) -> dict[str, Any]:
        return {
            "model_mode": self.asr_model_mode,
            "max_sessions": self.asr_max_sessions,
            "chinese_script": self.asr_chinese_script,
            "nearfield_filter": self.asr_enable_nearfield_filter,
            "nearfield_rms_threshold": self.asr_nearfield_rms_threshold,
            "nearfield_filter_log": self.asr_nearfield_filter_log_enabled,
        }

    def light_asr(self) -> LightAsrSettings:
        """The light ASR backend's frozen slice of these settings."""
        return LightAsrSettings(
            **self._asr_common(),
            data_dir=Path(self.data_dir),
            model=self.asr_light_model,
            models=self.asr_light_models,
            cpu_threads=self.asr_light_cpu_threads,
            decode_slots=self.asr_light_decode_slots,
            beam_size=self.asr_light_beam_size,
            partial_interval=self.asr_light_partial_interval,
            partial_max_queue=self.asr_light_partial_max_queue,
            fast_en_partials=self.asr_light_fast_en_partials,
            max_sentence_s=self.asr_light_max_sentence_s,
            speech_gate=self.asr_light_speech_gate,
        )

    def funasr(self) -> FunAsrSettings:
        """The FunASR backend's frozen slice of these settings."""
        return FunAsrSettings(
            **self._asr_common(),
            modelscope_path=self.modelscope_path,
            realtime_model=self.funasr_realtime_model,
            offline_model=self.funasr_offline_model,
            vad_model=self.vad_model,
            punc_model=self.punc_model,
            punc_realtime_model=self.punc_realtime_model,
            enable_realtime_punc=self.asr_enable_realtime_punc,
            chunk_ms=self.funasr_chunk_ms,
            stream_batching=self.funasr_stream_batching,
            share_fbank=self.funasr_share_fbank,
            fbank=self.funasr_fbank,
            batch_finals=self.funasr_batch_finals,
            max_batch=self.funasr_max_batch,
            batch_wait_ms=self.funasr_batch_wait_ms,
            realtime_threads=self.funasr_realtime_threads,
            ncpu=self.funasr_ncpu,
            offline_batch_s=self.funasr_offline_batch_s,
            oneshot_vad_s=self.funasr_oneshot_vad_s,
        )

    def required_tasks(self) -> list[Literal["asr", "tts"]]:
        """HEALTH_TASKS as a list of tasks."""
        spec = self.health_tasks.strip().lower()
        if spec == "auto":
            gpus = {"asr": self.asr_gpus, "tts": self.tts_gpus}
            listed = [t for t, g in gpus.items() if g.strip().lower() != "none"]
        else:
            listed = [t.strip() for t in spec.split(",")]
        return [t for t in ("asr", "tts") if t in listed]

    def asr_devices(self) -> list[str]:
        """ASR_GPUS -> engine devices: "" / auto -> cuda:0 when available else cpu."""
        return _devices(self.asr_gpus)

    def tts_devices(self) -> list[str]:
        """TTS_GPUS -> engine devices, as asr_devices."""
        return _devices(self.tts_gpus)


def _devices(spec: str) -> list[str]:
    raw = spec.strip().lower()
    if raw == "none":  # no engine of this task on this machine
        return []
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
