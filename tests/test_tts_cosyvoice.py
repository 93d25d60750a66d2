"""CosyVoice adapter against the TEST DOUBLE of the upstream API (tests/cosyvoice_double.py).

The adapter's real import path (COSYVOICE_DIR on sys.path, `cosyvoice.cli.cosyvoice`), model
resolution, routing, prompt caching, streaming and errors run; only the model is the double.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engines.asr.base import ModelNotFound
from engines.tts.base import AudioPiece, PromptVoice, SynthesisOptions
from engines.tts.cosyvoice import CosyVoiceBackend
from engines.tts.cosyvoice.voices import EOP, SYSTEM, detect_language
from funspeech.settings import Settings, SettingsError
from tests.cosyvoice_double import (
    DOUBLE,
    PRESET_SPEAKERS,
    expected_seconds,
    make_model_dir,
    materialise,
    model_tree,
    settings_values,
)

V3_INSTRUCT = f"{SYSTEM} 用开心的语气说{EOP}"


@pytest.fixture(autouse=True)
def double() -> Iterator[Any]:
    DOUBLE.reset()
    yield DOUBLE
    DOUBLE.gate.set()


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(4)
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A fake checkout and one model folder per version."""
    return model_tree(tmp_path)


def settings_for(tree: dict[str, Path], **over: Any) -> Settings:
    values: dict[str, Any] = dict(settings_values(tree))
    values.update(over)
    return Settings(**values)


async def loaded(
    tree: dict[str, Path], executor: ThreadPoolExecutor, device: str = "cpu", **over: Any
) -> CosyVoiceBackend:
    backend = CosyVoiceBackend(settings_for(tree, **over), device, executor)
    await asyncio.to_thread(backend.load)
    return backend


async def collect(
    backend: CosyVoiceBackend,
    text: str,
    voice: str | PromptVoice,
    options: SynthesisOptions | None = None,
) -> list[AudioPiece]:
    async def run() -> list[AudioPiece]:
        return [p async for p in backend.synthesize(text, voice, options or SynthesisOptions())]

    return await asyncio.wait_for(run(), 20)


def seconds(pieces: list[AudioPiece], rate: int) -> float:
    return sum(len(p.audio) for p in pieces) / rate


def prompt_voice(
    vid: str = "alice", freq: float = 220.0, sr: int = 16000, **kw: Any
) -> PromptVoice:
    t = np.arange(int(2.0 * sr)) / sr
    audio = (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    kw.setdefault("text", "希望你以后能够做的比我还好")
    kw.setdefault("language", "zh")
    return PromptVoice(id=vid, audio=audio, sample_rate=sr, **kw)


async def wait_until(cond: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


# --- presets
async def test_presets_with_aliases_and_sft(tree, executor) -> None:
    backend = await loaded(tree, executor)
    assert [v.id for v in backend.voices] == PRESET_SPEAKERS
    by_id = {v.id: v for v in backend.voices}
    assert "xiaoyun" in by_id["中文女"].aliases and "xiaogang" in by_id["中文男"].aliases
    assert by_id["粤语女"].language == "zh-HK" and by_id["英文男"].gender == "male"
    assert backend.can_clone and backend.can_instruct and backend.sample_rate == 24000

    text = "你好，欢迎使用语音合成服务。"
    pieces = await collect(backend, text, "中文女")
    call = DOUBLE.calls[-1]
    assert (call.model, call.method, call.spk, call.stream) == (
        "v1",
        "inference_sft",
        "中文女",
        True,
    )
    # v1 speaks at 22050 Hz; with a clone model loaded the backend resamples to its 24000
    assert seconds(pieces, 24000) == pytest.approx(expected_seconds(text), rel=0.02)
    assert all(p.audio.dtype == np.float32 and p.audio.ndim == 1 for p in pieces)


async def test_presets_only_mode_native_rate(tree, executor) -> None:
    backend = await loaded(tree, executor, tts_model_mode="cosyvoice1")
    assert backend.config.mode == "sft" and backend.sample_rate == 22050
    assert not backend.can_clone and not backend.can_instruct
    pieces = await collect(backend, "Hello world.", "英文男")
    assert seconds(pieces, 22050) == pytest.approx(expected_seconds("Hello world."), rel=0.01)
    assert [c[0] for c in DOUBLE.constructed] == ["CosyVoice"]


# --- cloned voices
async def test_clone_prompt_processed_once_and_again_when_changed(tree, executor) -> None:
    backend = await loaded(tree, executor)  # clone model: CosyVoice3 (the default)
    voice = prompt_voice()
    text = "收到好友从远方寄来的生日礼物。"
    first, second = await asyncio.gather(
        collect(backend, text, voice), collect(backend, text, voice)
    )
    await collect(backend, text, voice)
    assert DOUBLE.processed == [f"{SYSTEM}{EOP}{voice.text}"]  # v3 prompt format, once
    calls = [c for c in DOUBLE.calls if c.method == "inference_zero_shot"]
    assert len(calls) == 3 and {c.spk for c in calls} == {calls[0].spk}
    assert calls[0].spk.startswith("fs:alice:") and calls[0].model == "v3"
    assert seconds(first, 24000) == pytest.approx(expected_seconds(text), rel=0.01)
    assert seconds(second, 24000) == pytest.approx(expected_seconds(text), rel=0.01)

    changed = prompt_voice(freq=330.0)  # same id, another recording
    await collect(backend, text, changed)
    assert len(DOUBLE.processed) == 2
    assert DOUBLE.calls[-1].spk != calls[0].spk
    assert backend.stats()["prompts_processed"] == 2


async def test_clone_v2_plain_prompt_text(tree, executor) -> None:
    backend = await loaded(tree, executor, clone_model_version="cosyvoice2")
    voice = prompt_voice()
    await collect(backend, "今天天气很好。", voice)
    assert DOUBLE.processed == [voice.text]
    assert DOUBLE.calls[-1].model == "v2"


async def test_prompt_below_16k_is_resampled(tree, executor) -> None:
    backend = await loaded(tree, executor)
    await collect(backend, "今天天气很好。", prompt_voice(sr=8000))
    assert len(DOUBLE.processed) == 1


async def test_prompt_cache_evicts_least_recent(tree, executor) -> None:
    backend = await loaded(tree, executor, cosyvoice_prompt_cache=1)
    a, b = prompt_voice("a"), prompt_voice("b", freq=300.0)
    for v in (a, b, a):
        await collect(backend, "今天天气很好。", v)
    assert len(DOUBLE.processed) == 3  # a was dropped for b, so processed again
    table = backend._clone.model.frontend.spk2info
    assert [k.split(":")[1] for k in table] == ["a"]


async def test_older_api_generation_prompt_as_16k_tensor(tree, executor, tmp_path) -> None:
    old = materialise(tmp_path / "CosyVoice-old", generation="tensor")
    backend = await loaded(tree, executor, cosyvoice_dir=str(old))
    assert backend._upstream is not None and not backend._upstream.prompt_as_path
    voice = prompt_voice(sr=24000)
    await collect(backend, "今天天气很好。", voice)
    await collect(backend, "今天天气很好。", voice)
    assert len(DOUBLE.processed) == 1
    assert DOUBLE.constructed[-1][0] == "OldCosyVoice3"


# --- instructions
@pytest.mark.parametrize(
    ("version", "expected"),
    [("cosyvoice3", V3_INSTRUCT), ("cosyvoice2", f"用开心的语气说{EOP}")],
)
async def test_instructions_format_and_cache(tree, executor, version, expected) -> None:
    backend = await loaded(tree, executor, clone_model_version=version)
    voice = prompt_voice()
    opts = SynthesisOptions(instructions="用开心的语气说")
    pieces = await collect(backend, "今天天气很好。", voice, opts)
    await collect(backend, "明天也不错。", voice, opts)
    calls = [c for c in DOUBLE.calls if c.method == "inference_instruct2"]
    assert len(calls) == 2 and all(c.prompt_text == expected for c in calls)
    assert DOUBLE.processed == [expected]  # prompt + instruction processed once
    assert seconds(pieces, 24000) == pytest.approx(expected_seconds("今天天气很好。"), rel=0.01)
    await collect(backend, "今天天气很好。", voice, SynthesisOptions(instructions="慢一点"))
    assert len(DOUBLE.processed) == 2


async def test_instruction_with_marker_is_used_as_given(tree, executor) -> None:
    backend = await loaded(tree, executor)
    opts = SynthesisOptions(instructions=V3_INSTRUCT)
    await collect(backend, "今天天气很好。", prompt_voice(), opts)
    assert DOUBLE.calls[-1].prompt_text == V3_INSTRUCT


# --- cross-lingual
@pytest.mark.parametrize("version", ["cosyvoice3", "cosyvoice2"])
async def test_cross_lingual_when_languages_differ(tree, executor, version) -> None:
    backend = await loaded(tree, executor, clone_model_version=version)
    voice = prompt_voice()  # Mandarin prompt
    text = "Nice to meet you, my friend."
    pieces = await collect(backend, text, voice)  # language from the script
    call = DOUBLE.calls[-1]
    assert call.method == "inference_cross_lingual"
    assert call.text == (f"{SYSTEM}{EOP}{text}" if version == "cosyvoice3" else text)
    assert seconds(pieces, 24000) == pytest.approx(expected_seconds(text), rel=0.01)
    # stated language wins over the script; the cached prompt is shared with zero-shot
    await collect(backend, "OK 你好", voice, SynthesisOptions(language="en-US"))
    assert DOUBLE.calls[-1].method == "inference_cross_lingual"
    await collect(backend, "你好，朋友。", voice)
    assert DOUBLE.calls[-1].method == "inference_zero_shot"
    assert len(DOUBLE.processed) == 1


async def test_cross_lingual_without_transcript(tree, executor) -> None:
    backend = await loaded(tree, executor)
    await collect(backend, "你好。", prompt_voice(text="", language=None))
    assert DOUBLE.calls[-1].method == "inference_cross_lingual"


def test_detect_language() -> None:
    assert detect_language("今天天气很好") == "zh"
    assert detect_language("Hello there") == "en"
    assert detect_language("こんにちは世界") == "ja"
    assert detect_language("안녕하세요") == "ko"
    assert detect_language("我用 iPhone 打电话") == "zh"
    assert detect_language("1234, ...") is None


# --- streaming, cancellation, speed
async def test_first_piece_before_sentence_is_done(tree, executor) -> None:
    backend = await loaded(tree, executor)
    text = "这是一个比较长的句子，用来测试流式合成的第一段音频。"
    DOUBLE.gate.clear()  # the double holds every chunk after the first
    gen = backend.synthesize(text, "中文女", SynthesisOptions())
    first = await asyncio.wait_for(gen.__anext__(), 10)
    assert len(first.audio) > 0 and DOUBLE.finished == 0 and DOUBLE.chunks == 1
    DOUBLE.gate.set()
    rest = [p async for p in gen]
    assert len(rest) >= 2 and DOUBLE.finished == 1
    total = seconds([first, *rest], 24000)
    assert total == pytest.approx(expected_seconds(text), rel=0.02)


async def test_consumer_stop_ends_thread_at_next_chunk(tree, executor) -> None:
    backend = await loaded(tree, executor, tts_model_mode="sft")
    assert backend.capacity == 1
    text = "这是一个比较长的句子，用来测试取消以后后台线程会在下一段停止。"
    DOUBLE.gate.clear()
    gen = backend.synthesize(text, "中文男", SynthesisOptions())
    await asyncio.wait_for(gen.__anext__(), 10)
    await gen.aclose()
    DOUBLE.gate.set()
    await wait_until(lambda: DOUBLE.closed == 1)
    assert DOUBLE.finished == 0 and DOUBLE.chunks <= 2  # far fewer than the sentence's
    await wait_until(lambda: backend.stats()["active"] == 0)
    # the single slot is free again
    pieces = await collect(backend, "你好。", "中文男")
    assert seconds(pieces, 22050) > 0


@pytest.mark.parametrize("speed", [2.0, 0.5])
async def test_speed_uses_non_streaming_mode(tree, executor, speed) -> None:
    backend = await loaded(tree, executor)
    text = "你好，欢迎使用语音合成服务。"
    pieces = await collect(backend, text, "中文女", SynthesisOptions(speed=speed))
    call = DOUBLE.calls[-1]
    assert (call.stream, call.speed) == (False, speed)
    assert seconds(pieces, 24000) == pytest.approx(expected_seconds(text, speed), rel=0.02)


# --- configuration and load
async def test_trt_fp16_passed_as_each_constructor_takes_them(tree, executor) -> None:
    await loaded(tree, executor, tts_load_trt=True, tts_enable_fp16=True)
    kwargs = {name: kw for name, _, kw in DOUBLE.constructed}
    assert kwargs["CosyVoice"] == {"load_jit": True, "load_trt": True, "fp16": True}
    assert kwargs["CosyVoice3"] == {"load_trt": True, "fp16": True}  # v3 takes no load_jit


def test_engine_pool_has_a_thread_per_synthesis() -> None:
    """Each streaming synthesis holds an executor thread: a TTS engine's pool is never smaller
    than its capacity (+2 for prompts), whatever INFERENCE_THREAD_POOL_SIZE says."""
    from engines.__main__ import pool_size

    settings = Settings(inference_thread_pool_size=4, tts_max_sessions=16, _env_file=None)
    assert pool_size(settings, "tts") == 18
    assert pool_size(settings, "asr") == 4
    assert pool_size(Settings(inference_thread_pool_size=24, _env_file=None), "tts") == 24


def test_capacity_defaults_and_override(tree, executor) -> None:
    assert CosyVoiceBackend(settings_for(tree), "cpu", executor).capacity == 1
    gpu = CosyVoiceBackend(settings_for(tree), "cuda:1", executor)
    assert gpu.capacity == 2
    gpu.config = dataclasses.replace(gpu.config, max_sessions=5)
    assert gpu.capacity == 5


@pytest.mark.parametrize(
    ("value", "layout"),
    [
        ("iic/CosyVoice-300M-SFT", "hub/iic/CosyVoice-300M-SFT"),
        ("iic/CosyVoice-300M-SFT", "models/iic--CosyVoice-300M-SFT/snapshots/master"),
        ("iic/CosyVoice-300M-SFT", "hub/models/iic/CosyVoice-300M-SFT"),
    ],
)
async def test_modelscope_cache_layouts(tree, executor, tmp_path, value, layout) -> None:
    root = tmp_path / "ms"
    make_model_dir(root / layout, "v1")
    backend = await loaded(
        tree, executor, tts_model_mode="sft", sft_model_id=value, modelscope_path=str(root / "hub")
    )
    assert backend.model_paths()["SFT_MODEL_ID"] == str((root / layout).resolve())


async def test_v3_id_with_dots_in_cache(tree, executor, tmp_path) -> None:
    root = tmp_path / "ms" / "hub"
    where = root / "models" / "FunAudioLLM" / "Fun-CosyVoice3-0___5B-2512"
    make_model_dir(where, "v3")
    backend = await loaded(
        tree,
        executor,
        tts_model_mode="clone",
        cosyvoice3_model_id="FunAudioLLM/Fun-CosyVoice3-0.5B-2512",
        modelscope_path=str(root),
    )
    assert backend.voices == [] and backend.sample_rate == 24000
    assert backend.model_paths()["COSYVOICE3_MODEL_ID"] == str(where.resolve())


# --- errors
async def load_error(tree, executor, **over: Any) -> str:
    backend = CosyVoiceBackend(settings_for(tree, **over), "cpu", executor)
    with pytest.raises(ModelNotFound) as err:
        await asyncio.to_thread(backend.load)
    return str(err.value)


async def test_missing_model_is_named(tree, executor, tmp_path) -> None:
    msg = await load_error(tree, executor, sft_model_id="iic/CosyVoice-300M-SFT")
    assert "SFT_MODEL_ID='iic/CosyVoice-300M-SFT' not found" in msg
    assert "never downloads" in msg and "MODELSCOPE_PATH" in msg
    msg = await load_error(tree, executor, cosyvoice3_model_id=str(tmp_path / "nope"))
    assert "COSYVOICE3_MODEL_ID" in msg and "not found" in msg
    assert not any(c[0] == "CosyVoice3" for c in DOUBLE.constructed)


async def test_wrong_or_incomplete_model_dir(tree, executor) -> None:
    msg = await load_error(tree, executor, sft_model_id=str(tree["v2"]))
    assert "is a CosyVoice2 model" in msg and "cosyvoice.yaml" in msg
    (tree["v3"] / "flow.pt").unlink()
    msg = await load_error(tree, executor, tts_model_mode="clone")
    assert "COSYVOICE3_MODEL_ID" in msg and "lacks flow.pt" in msg


async def test_cosyvoice_dir_missing_or_invalid(tree, executor, tmp_path) -> None:
    msg = await load_error(tree, executor, cosyvoice_dir="")
    assert "COSYVOICE_DIR is not set" in msg and "docs/cosyvoice.md" in msg
    msg = await load_error(tree, executor, cosyvoice_dir=str(tmp_path / "absent"))
    assert "does not exist" in msg
    (tmp_path / "empty").mkdir()
    msg = await load_error(tree, executor, cosyvoice_dir=str(tmp_path / "empty"))
    assert "not a CosyVoice checkout" in msg


@pytest.mark.parametrize(
    ("module", "hint"),
    [("matcha.models.components", "Matcha-TTS"), ("hyperpyyaml_absent", "dependencies")],
)
async def test_cosyvoice_import_failure(tree, executor, tmp_path, module, hint) -> None:
    broken = materialise(tmp_path / "broken")
    (broken / "cosyvoice" / "cli" / "cosyvoice.py").write_text(f"import {module}\n")
    msg = await load_error(tree, executor, cosyvoice_dir=str(broken))
    assert "cannot import CosyVoice" in msg and hint in msg


async def test_unknown_preset(tree, executor) -> None:
    backend = await loaded(tree, executor)
    with pytest.raises(ValueError, match="unknown preset voice 'nobody'; presets: 中文女"):
        await collect(backend, "你好", "nobody")


async def test_clone_in_presets_only_mode(tree, executor) -> None:
    backend = await loaded(tree, executor, tts_model_mode="sft")
    with pytest.raises(ValueError, match=r"needs a clone model .* TTS_MODEL_MODE=sft"):
        await collect(backend, "你好", prompt_voice())
    with pytest.raises(ValueError, match="apply to cloned voices only"):
        await collect(backend, "你好", "中文女", SynthesisOptions(instructions="开心"))


async def test_preset_in_clone_only_mode(tree, executor) -> None:
    backend = await loaded(tree, executor, tts_model_mode="cosyvoice2")
    assert backend.config.mode == "clone" and backend.voices == []
    with pytest.raises(ValueError, match=r"needs CosyVoice-300M-SFT.*TTS_MODEL_MODE=clone"):
        await collect(backend, "你好", "中文女")
    assert backend.stats()["active"] == 0


def test_unknown_mode_rejected() -> None:
    with pytest.raises(SettingsError, match="TTS_MODEL_MODE='cosyvoice4'"):
        Settings(tts_model_mode="cosyvoice4")


async def test_stalled_model_is_an_error_and_frees_the_slot(tree, executor) -> None:
    backend = await loaded(tree, executor, tts_model_mode="sft", cosyvoice_chunk_timeout=0.3)
    DOUBLE.gate.clear()  # the model makes its first chunk, then nothing
    gen = backend.synthesize(
        "这是一个比较长的句子，后面的音频不会来了。", "中文女", SynthesisOptions()
    )
    await asyncio.wait_for(gen.__anext__(), 10)
    with pytest.raises(RuntimeError, match=r"no audio from the model for 0\.3 s"):
        await asyncio.wait_for(gen.__anext__(), 10)
    assert backend.stats()["active"] == 0  # given up on: the slot is free again
    DOUBLE.gate.set()
    assert seconds(await collect(backend, "你好。", "中文女"), 22050) > 0
    await wait_until(lambda: DOUBLE.closed == 1)  # the stalled thread ended at its next chunk
