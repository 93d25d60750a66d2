"""Finding CosyVoice model directories and loading them with the upstream classes.

Nothing here downloads: a model setting is a local directory or a ModelScope id that must already
be in the cache (MODELSCOPE_PATH). Upstream's constructors call `snapshot_download` for a path that
does not exist, so they are only ever handed an existing, checked directory.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.asr.base import ModelNotFound
from engines.tts.cosyvoice.config import Kind
from engines.tts.cosyvoice.install import Upstream

log = logging.getLogger(__name__)

YAML = {"v1": "cosyvoice.yaml", "v2": "cosyvoice2.yaml", "v3": "cosyvoice3.yaml"}
_NAMES = {"v1": "CosyVoice (v1)", "v2": "CosyVoice2", "v3": "CosyVoice3"}
_FILES = {
    "v1": ("llm.pt", "flow.pt", "hift.pt", "campplus.onnx", "speech_tokenizer_v1.onnx"),
    "v2": ("llm.pt", "flow.pt", "hift.pt", "campplus.onnx", "speech_tokenizer_v2.onnx"),
    "v3": ("llm.pt", "flow.pt", "hift.pt", "campplus.onnx", "speech_tokenizer_v3.onnx"),
}


def _snapshots(repo: Path) -> list[Path]:
    """modelscope >= 1.3x: <cache>/models/<owner>--<name>/snapshots/<revision>/."""
    snaps = repo / "snapshots"
    if not snaps.is_dir():
        return []
    for name in ("master", "main"):
        if (snaps / name).is_dir():
            return [snaps / name]
    return sorted(p for p in snaps.iterdir() if p.is_dir())


def candidate_dirs(value: str, modelscope_path: str) -> list[Path]:
    """Where a model setting may live: the value as a path, then every ModelScope cache layout
    (flat <root>/<owner>/<name>, <root>/models/<owner>/<name> with '.' as '___', and the current
    <root>/models/<owner>--<name>/snapshots/<rev>), under MODELSCOPE_PATH and, when that ends in
    `hub`, under its parent (the modelscope cache root)."""
    out = [Path(value).expanduser()]
    if value.count("/") != 1 or value.startswith(("/", ".", "~")):
        return out
    owner, name = value.split("/")
    root = Path(modelscope_path).expanduser()
    for base in [root, root.parent] if root.name == "hub" else [root]:
        for n in dict.fromkeys((name, name.replace(".", "___"))):
            out += [base / owner / n, base / "models" / owner / n]
        repo = base / "models" / f"{owner}--{name}"
        snaps = _snapshots(repo)
        if len(snaps) > 1:
            raise ModelNotFound(
                f"{value!r}: several revisions cached in {repo / 'snapshots'} "
                f"({', '.join(p.name for p in snaps)}); set the setting to one of them"
            )
        out += snaps
    return list(dict.fromkeys(out))


def resolve_model_dir(setting: str, value: str, modelscope_path: str, kind: Kind) -> Path:
    """The checked directory of one model, or ModelNotFound naming what is missing."""
    if not value:
        raise ModelNotFound(f"{setting} is empty: set it to a model directory or ModelScope id")
    looked = candidate_dirs(value, modelscope_path)
    for path in looked:
        if not path.is_dir():
            continue
        if not (path / YAML[kind]).is_file():
            other = [k for k, y in YAML.items() if (path / y).is_file()]
            what = f"a {_NAMES[other[0]]} model" if other else "not a CosyVoice model"
            raise ModelNotFound(
                f"{setting}={value!r}: {path} is {what}; this setting needs a {_NAMES[kind]} "
                f"model ({YAML[kind]})"
            )
        needed = list(_FILES[kind]) + (["CosyVoice-BlankEN"] if kind != "v1" else [])
        missing = [f for f in needed if not (path / f).exists()]
        if missing:
            raise ModelNotFound(f"{setting}={value!r}: {path} lacks {', '.join(missing)}")
        return path.resolve()
    raise ModelNotFound(
        f"{setting}={value!r} not found; looked at: "
        + ", ".join(str(p) for p in looked)
        + ". FunSpeech never downloads models: put the model in the ModelScope cache "
        f"(MODELSCOPE_PATH) or set {setting} to a local directory (docs/cosyvoice.md)"
    )


@dataclass(slots=True)
class LoadedModel:
    kind: Kind
    setting: str
    path: Path
    model: Any  # an upstream CosyVoice / CosyVoice2 / CosyVoice3 instance

    @property
    def sample_rate(self) -> int:
        return int(self.model.sample_rate)


def load_model(
    upstream: Upstream,
    setting: str,
    value: str,
    modelscope_path: str,
    kind: Kind,
    *,
    load_trt: bool,
    fp16: bool,
) -> LoadedModel:
    """Resolve one model and construct it with the upstream class its yaml names."""
    path = resolve_model_dir(setting, value, modelscope_path, kind)
    cls = upstream.model_class(kind)
    # constructors differ by version (v3 has no load_jit): pass what this one takes
    wanted = {"load_jit": load_trt and kind != "v3", "load_trt": load_trt, "fp16": fp16}
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in wanted.items() if k in params}
    factory = getattr(upstream.module, "AutoModel", None) or cls
    try:
        model = factory(model_dir=str(path), **kwargs)
    except Exception as e:
        raise RuntimeError(
            f"{setting}: cannot load {_NAMES[kind]} from {path}: {type(e).__name__}: {e}"
        ) from e
    log.info("loaded %s (%s) from %s", setting, type(model).__name__, path)
    return LoadedModel(kind, setting, path, model)
