"""TEST DOUBLE of upstream CosyVoice's Python API (`cosyvoice.cli.cosyvoice`) — not CosyVoice.

It implements exactly the API recorded in shared/reference/models.md, so the adapter's real
import and load path run against it when CI has no CosyVoice checkout:
`AutoModel(model_dir=...)` picks CosyVoice / CosyVoice2 / CosyVoice3 from cosyvoice.yaml /
cosyvoice2.yaml / cosyvoice3.yaml; `.sample_rate` (22050 v1, 24000 v2/v3);
`.list_available_spks()`; `.inference_sft`, `.inference_zero_shot`, `.inference_cross_lingual`,
`.inference_instruct2` (v2/v3), `.add_zero_shot_spk`, each yielding `{'tts_speech':
FloatTensor[1, T]}` (several chunks when stream=True); prompts kept in `.frontend.spk2info`.
`materialise()` writes a fake `cosyvoice` package that re-exports these classes into a folder
COSYVOICE_DIR can point at; `make_model_dir()` writes model folders of each version.

Upstream behaviours it keeps: speed != 1 only without streaming (AssertionError otherwise);
CosyVoice3 asserts `<|endofprompt|>` in its prompt text or text; a model dir that does not exist
is a download (here: an error); prompts below 16 kHz are refused; `generation="tensor"` gives the
older API (prompt as a 16 kHz tensor `prompt_speech_16k`, no AutoModel).
Made-up audio: a sine whose length is 60 ms per character of the spoken text, divided by speed,
cut into 0.2 s chunks when streaming; `DOUBLE.gate` holds the next chunk while it is cleared.
In an engine process (where DOUBLE cannot be reached), COSYVOICE_DOUBLE_CHUNK_DELAY seconds pass
before each chunk after the first, so a test can see audio arrive before the synthesis ends.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

EOP = "<|endofprompt|>"
SECONDS_PER_CHAR = 0.06
CHUNK_S = 0.2
PRESET_SPEAKERS = ["中文女", "中文男", "英文女", "英文男", "日语男", "韩语女", "粤语女"]
_YAML = {"v1": "cosyvoice.yaml", "v2": "cosyvoice2.yaml", "v3": "cosyvoice3.yaml"}


@dataclass
class Call:
    model: str  # v1 / v2 / v3
    method: str
    text: str  # tts_text as passed
    prompt_text: str  # what conditioned the model: the cached entry's or the argument's
    spk: str
    stream: bool
    speed: float


@dataclass
class Recorder:
    """What the double was asked to do, shared by every instance (tests reset it)."""

    calls: list[Call] = field(default_factory=list)
    constructed: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    processed: list[str] = field(default_factory=list)  # prompts processed (audio -> features)
    chunks: int = 0  # chunks yielded
    finished: int = 0  # generators that ran to their end
    closed: int = 0  # generators closed before their end
    gate: threading.Event = field(default_factory=threading.Event)

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]
        self.gate.set()


DOUBLE = Recorder()
DOUBLE.gate.set()


def spoken(text: str) -> str:
    """The part of a CosyVoice text that is spoken: after the end-of-prompt marker, no blanks."""
    return "".join(text.split(EOP)[-1].split())


def expected_seconds(text: str, speed: float = 1.0) -> float:
    return len(spoken(text)) * SECONDS_PER_CHAR / speed


class _Frontend:
    def __init__(self, spk2info: dict[str, dict[str, Any]]) -> None:
        self.spk2info = spk2info


class CosyVoice:
    kind = "v1"
    yaml = _YAML["v1"]
    rate = 22050
    prompt_as_path = True

    def __init__(
        self,
        model_dir: str,
        load_jit: bool = False,
        load_trt: bool = False,
        fp16: bool = False,
        trt_concurrent: int = 1,
    ) -> None:
        self._setup(model_dir, load_jit=load_jit, load_trt=load_trt, fp16=fp16)

    def _setup(self, model_dir: str, **kwargs: Any) -> None:
        if not os.path.exists(model_dir):
            raise RuntimeError(f"TEST DOUBLE: snapshot_download({model_dir!r}) would download")
        if not os.path.exists(os.path.join(model_dir, self.yaml)):
            raise ValueError(f"{model_dir}/{self.yaml} not found!")
        self.model_dir = model_dir
        self.sample_rate = self.rate
        spk_file = os.path.join(model_dir, "spk2info.pt")
        table = torch.load(spk_file, weights_only=True) if os.path.exists(spk_file) else {}
        self.frontend = _Frontend(table)
        DOUBLE.constructed.append((type(self).__name__, model_dir, kwargs))

    def list_available_spks(self) -> list[str]:
        return list(self.frontend.spk2info.keys())

    # --- prompts
    def _prompt_seconds(self, prompt: Any) -> float:
        if self.prompt_as_path:
            audio, sr = sf.read(prompt, dtype="float32")
            assert sr >= 16000, f"wav sample rate {sr} must be greater than 16000"
            return len(audio) / sr
        assert isinstance(prompt, torch.Tensor) and prompt.dim() == 2, "prompt_speech_16k [1, T]"
        return prompt.shape[1] / 16000

    def _process(self, prompt_text: str, prompt: Any) -> dict[str, Any]:
        seconds = self._prompt_seconds(prompt)
        DOUBLE.processed.append(prompt_text)
        return {"prompt_text": prompt_text, "prompt_seconds": seconds}

    def add_zero_shot_spk(self, prompt_text: str, prompt_wav: Any, zero_shot_spk_id: str) -> bool:
        assert zero_shot_spk_id != "", "do not use empty zero_shot_spk_id"
        self.frontend.spk2info[zero_shot_spk_id] = self._process(prompt_text, prompt_wav)
        return True

    def _entry(self, prompt_text: str, prompt: Any, spk: str) -> dict[str, Any]:
        return dict(self.frontend.spk2info[spk]) if spk else self._process(prompt_text, prompt)

    # --- synthesis
    def _speak(
        self, method: str, text: str, prompt_text: str, spk: str, stream: bool, speed: float
    ) -> Iterator[dict[str, torch.Tensor]]:
        DOUBLE.calls.append(Call(self.kind, method, text, prompt_text, spk, stream, speed))
        if self.kind == "v3":
            assert EOP in prompt_text + text, "<|endofprompt|> not detected in CosyVoice3 input"
        if speed != 1.0:
            assert not stream, "speed change only support non-stream inference mode"
        n = max(1, round(expected_seconds(text, speed) * self.sample_rate))
        freq = 150.0 + (sum(map(ord, spk or prompt_text)) % 200)
        audio = 0.3 * np.sin(2 * np.pi * freq * np.arange(n) / self.sample_rate)
        step = round(CHUNK_S * self.sample_rate) if stream else n
        delay = float(os.environ.get("COSYVOICE_DOUBLE_CHUNK_DELAY", "0"))
        done = False
        try:
            for start in range(0, n, step):
                if start and not DOUBLE.gate.wait(10):
                    raise TimeoutError("TEST DOUBLE: gate stayed closed for 10 s")
                if start and delay:
                    time.sleep(delay)
                DOUBLE.chunks += 1
                chunk = torch.from_numpy(audio[start : start + step].astype(np.float32))
                yield {"tts_speech": chunk.unsqueeze(0)}
            done = True
        finally:
            if done:
                DOUBLE.finished += 1
            else:
                DOUBLE.closed += 1

    def inference_sft(
        self,
        tts_text: str,
        spk_id: str,
        stream: bool = False,
        speed: float = 1.0,
        text_frontend: bool = True,
    ) -> Iterator[dict[str, torch.Tensor]]:
        if spk_id not in self.frontend.spk2info:
            raise KeyError(spk_id)
        return self._speak("inference_sft", tts_text, "", spk_id, stream, speed)

    def inference_zero_shot(
        self,
        tts_text: str,
        prompt_text: str,
        prompt_wav: Any,
        zero_shot_spk_id: str = "",
        stream: bool = False,
        speed: float = 1.0,
        text_frontend: bool = True,
    ) -> Iterator[dict[str, torch.Tensor]]:
        entry = self._entry(prompt_text, prompt_wav, zero_shot_spk_id)
        return self._speak(
            "inference_zero_shot",
            tts_text,
            entry["prompt_text"],
            zero_shot_spk_id,
            stream,
            speed,
        )

    def inference_cross_lingual(
        self,
        tts_text: str,
        prompt_wav: Any,
        zero_shot_spk_id: str = "",
        stream: bool = False,
        speed: float = 1.0,
        text_frontend: bool = True,
    ) -> Iterator[dict[str, torch.Tensor]]:
        self._entry("", prompt_wav, zero_shot_spk_id)  # cross-lingual drops the prompt text
        return self._speak("inference_cross_lingual", tts_text, "", zero_shot_spk_id, stream, speed)


class CosyVoice2(CosyVoice):
    kind = "v2"
    yaml = _YAML["v2"]
    rate = 24000

    def __init__(
        self,
        model_dir: str,
        load_jit: bool = False,
        load_trt: bool = False,
        load_vllm: bool = False,
        fp16: bool = False,
        trt_concurrent: int = 1,
    ) -> None:
        self._setup(model_dir, load_jit=load_jit, load_trt=load_trt, fp16=fp16)

    def inference_instruct2(
        self,
        tts_text: str,
        instruct_text: str,
        prompt_wav: Any,
        zero_shot_spk_id: str = "",
        stream: bool = False,
        speed: float = 1.0,
        text_frontend: bool = True,
    ) -> Iterator[dict[str, torch.Tensor]]:
        entry = self._entry(instruct_text, prompt_wav, zero_shot_spk_id)
        return self._speak(
            "inference_instruct2",
            tts_text,
            entry["prompt_text"],
            zero_shot_spk_id,
            stream,
            speed,
        )


class CosyVoice3(CosyVoice2):
    kind = "v3"
    yaml = _YAML["v3"]

    def __init__(  # no load_jit, as upstream
        self,
        model_dir: str,
        load_trt: bool = False,
        load_vllm: bool = False,
        fp16: bool = False,
        trt_concurrent: int = 1,
    ) -> None:
        self._setup(model_dir, load_trt=load_trt, fp16=fp16)


def AutoModel(**kwargs: Any) -> CosyVoice:
    model_dir = kwargs["model_dir"]
    if not os.path.exists(model_dir):
        raise RuntimeError(f"TEST DOUBLE: snapshot_download({model_dir!r}) would download")
    for cls in (CosyVoice, CosyVoice2, CosyVoice3):
        if os.path.exists(os.path.join(model_dir, cls.yaml)):
            return cls(**kwargs)
    raise TypeError("No valid model type found!")


# --- the older API generation: prompt audio as a 16 kHz tensor named prompt_speech_16k
class _TensorPrompts:
    prompt_as_path = False

    def add_zero_shot_spk(
        self, prompt_text: str, prompt_speech_16k: Any, zero_shot_spk_id: str
    ) -> bool:
        return CosyVoice.add_zero_shot_spk(
            self,  # type: ignore[arg-type]
            prompt_text,
            prompt_speech_16k,
            zero_shot_spk_id,
        )


class OldCosyVoice(_TensorPrompts, CosyVoice):
    pass


class OldCosyVoice2(_TensorPrompts, CosyVoice2):
    pass


class OldCosyVoice3(_TensorPrompts, CosyVoice3):
    pass


_SHIM = {
    "path": "from tests.cosyvoice_double import AutoModel, CosyVoice, CosyVoice2, CosyVoice3\n",
    "tensor": (
        "from tests.cosyvoice_double import OldCosyVoice as CosyVoice\n"
        "from tests.cosyvoice_double import OldCosyVoice2 as CosyVoice2\n"
        "from tests.cosyvoice_double import OldCosyVoice3 as CosyVoice3\n"
    ),
}


def materialise(root: Path, generation: str = "path") -> Path:
    """A fake CosyVoice checkout at `root` whose `cosyvoice.cli.cosyvoice` is this double."""
    cli = root / "cosyvoice" / "cli"
    cli.mkdir(parents=True, exist_ok=True)
    (root / "cosyvoice" / "__init__.py").write_text('"""TEST DOUBLE package."""\n')
    (cli / "__init__.py").write_text("")
    header = '"""TEST DOUBLE of cosyvoice.cli.cosyvoice (tests/cosyvoice_double.py)."""\n\n'
    (cli / "cosyvoice.py").write_text(header + "# ruff: noqa\n" + _SHIM[generation])
    return root


def make_model_dir(path: Path, kind: str, speakers: list[str] | None = None) -> Path:
    """A model folder the adapter accepts: the version's yaml and the files it checks for,
    plus spk2info.pt with preset speakers for v1 (as CosyVoice-300M-SFT ships it)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / _YAML[kind]).write_text(f"# TEST DOUBLE {kind} model\n")
    tokenizer = {"v1": "speech_tokenizer_v1.onnx", "v2": "speech_tokenizer_v2.onnx"}
    for name in ("llm.pt", "flow.pt", "hift.pt", "campplus.onnx"):
        (path / name).write_bytes(b"")
    (path / tokenizer.get(kind, "speech_tokenizer_v3.onnx")).write_bytes(b"")
    if kind != "v1":
        (path / "CosyVoice-BlankEN").mkdir(exist_ok=True)
    if kind == "v1":
        spks = PRESET_SPEAKERS if speakers is None else speakers
        torch.save({s: {"embedding": torch.zeros(1, 192)} for s in spks}, path / "spk2info.pt")
    return path


def model_tree(root: Path) -> dict[str, Path]:
    """A fake checkout and one model folder per version under `root`."""
    return {
        "checkout": materialise(root / "CosyVoice"),
        "v1": make_model_dir(root / "models" / "sft", "v1"),
        "v2": make_model_dir(root / "models" / "cv2", "v2"),
        "v3": make_model_dir(root / "models" / "cv3", "v3"),
        "cache": root / "modelscope" / "hub",
    }


def settings_values(tree: dict[str, Path]) -> dict[str, str]:
    """The settings that point the CosyVoice backend at the double (field names; upper-case
    them for an engine process's environment)."""
    return {
        "cosyvoice_dir": str(tree["checkout"]),
        "sft_model_id": str(tree["v1"]),
        "clone_model_id": str(tree["v2"]),
        "cosyvoice3_model_id": str(tree["v3"]),
        "modelscope_path": str(tree["cache"]),
    }


def engine_env(tree: dict[str, Path], **over: str) -> dict[str, str]:
    """Environment of a TTS engine process (TTS_BACKEND=cosyvoice) on the double."""
    env = {k.upper(): v for k, v in settings_values(tree).items()}
    return {"TTS_BACKEND": "cosyvoice", **env, **over}
