"""Finding and loading FunASR model directories, and thread-safe inference calls.

Nothing here touches the network: a model setting is a local directory or a ModelScope id that
must already sit in the ModelScope cache; FunASR is only ever handed an existing directory.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engines.asr.base import ModelNotFound
from engines.model_paths import ambiguous_snapshots, candidate_dirs

log = logging.getLogger(__name__)


def _weights_file(model_dir: Path) -> Path:
    """The checkpoint FunASR will load: configuration.json's init_param, else model.pt."""
    conf = model_dir / "configuration.json"
    if conf.is_file():
        try:
            metas = json.loads(conf.read_text(encoding="utf-8")).get("file_path_metas", {})
            if isinstance(metas, dict) and isinstance(metas.get("init_param"), str):
                return model_dir / metas["init_param"]
        except (OSError, ValueError) as e:
            raise ModelNotFound(f"unreadable {conf}: {e}") from e
    return model_dir / "model.pt"


def resolve_model_dir(setting: str, value: str, modelscope_path: str) -> Path:
    """Return the directory for one model setting or raise ModelNotFound saying where we looked."""
    if not value:
        raise ModelNotFound(f"{setting.upper()} is empty: set it to a model directory or id")
    looked = candidate_dirs(value, modelscope_path)
    for path in looked:
        if not path.is_dir():
            continue
        if not ((path / "config.yaml").is_file() or (path / "configuration.json").is_file()):
            raise ModelNotFound(
                f"{setting.upper()}={value!r}: {path} has neither config.yaml nor "
                "configuration.json, so it is not a FunASR model directory"
            )
        weights = _weights_file(path)
        if not weights.is_file():
            raise ModelNotFound(f"{setting.upper()}={value!r}: weights file {weights} is missing")
        return path.resolve()
    revisions = ambiguous_snapshots(value, modelscope_path)
    if revisions:
        raise ModelNotFound(
            f"{setting.upper()}={value!r}: several cached revisions and none is master or main: "
            + ", ".join(str(p) for p in revisions)
            + f"; set {setting.upper()} to the directory of the one to use"
        )
    raise ModelNotFound(
        f"{setting.upper()}={value!r} not found; looked at: "
        + ", ".join(str(p) for p in looked)
        + ". FunSpeech never downloads models: put the model there (MODELSCOPE_PATH is the "
        f"ModelScope cache root) or set {setting.upper()} to a local directory"
    )


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "funasr" not in record.pathname


@contextlib.contextmanager
def _quiet_funasr() -> Iterator[None]:
    """AutoModel prints its version and logs info/warnings on the root logger while loading."""
    quiet, buf = _BelowError(), io.StringIO()
    logging.root.addFilter(quiet)
    try:
        with contextlib.redirect_stdout(buf):
            yield
    finally:
        logging.root.removeFilter(quiet)


def import_funasr() -> Any:
    """Import funasr once, keeping its import-time notice off stdout."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        import funasr
    if buf.getvalue().strip():
        log.debug("funasr import: %s", buf.getvalue().strip())
    return funasr


@dataclass
class LoadedModel:
    """One FunASR model: `infer` calls the model's own `inference` with a private copy of its
    config per call (AutoModel.generate shares and mutates one config dict, which is not safe
    across threads). `lock` serialises models that keep per-call state on the module itself."""

    role: str
    setting: str
    path: Path
    auto: Any
    serialize: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def model(self) -> Any:
        return self.auto.model

    @property
    def kwargs(self) -> dict[str, Any]:
        return self.auto.kwargs

    def infer(self, data_in: list[Any], **cfg: Any) -> list[dict[str, Any]]:
        import torch

        kw = dict(self.auto.kwargs)
        kw.update(cfg)
        keys = [f"{self.role}{i}" for i in range(len(data_in))]
        kw.setdefault("batch_size", len(data_in))
        with torch.no_grad():
            if self.serialize:
                with self.lock:
                    res = self.model.inference(data_in=data_in, key=keys, **kw)
            else:
                res = self.model.inference(data_in=data_in, key=keys, **kw)
        return list(res[0]) if isinstance(res, list | tuple) else res


def load_model(
    role: str, setting: str, value: str, modelscope_path: str, device: str, ncpu: int
) -> LoadedModel:
    """Resolve and load one model with FunASR's AutoModel; errors name the setting and file."""
    path = resolve_model_dir(setting, value, modelscope_path)
    import_funasr()
    from funasr import AutoModel

    try:
        with _quiet_funasr():
            auto = AutoModel(
                model=str(path),
                device=device,
                ncpu=ncpu,
                disable_update=True,
                disable_pbar=True,
                disable_log=True,
                log_level="ERROR",
            )
    except Exception as e:
        raise RuntimeError(
            f"{setting.upper()}: cannot load FunASR model from {path} "
            f"(weights {_weights_file(path)}): {type(e).__name__}: {e}"
        ) from e
    name = type(auto.model).__name__
    # FSMN-VAD writes nn_eval_block_size on the module between scoring and detection, and
    # SeACo/contextual Paraformer keep the hotword list on the module: one call at a time.
    serialize = name.startswith("FsmnVAD") or hasattr(auto.model, "generate_hotwords_list")
    log.info("loaded %s (%s) from %s on %s", setting.upper(), name, path, device)
    return LoadedModel(role, setting, path, auto, serialize=serialize)


def to_float32(audio: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(audio, dtype=np.float32)
