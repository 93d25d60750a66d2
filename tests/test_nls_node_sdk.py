"""Alibaba's Node.js NLS SDK (`alibabacloud-nls` from npm, tests/node) against the real bridge:
realtime transcription, one-sentence recognition, synthesis (short and long) and its errors,
with the token in the SDK's own X-NLS-Token header. The SDK is installed once per checkout
(`npm ci` in tests/node, from its lock file)."""

from __future__ import annotations

import json
import shutil
import subprocess
import wave
from pathlib import Path
from typing import Any

import pytest

from tests.harness import DATA, ROOT, BridgeProcess, EngineProcess
from tests.textmetrics import wer
from tests.tts_client import FOX, decode, fits_text

NODE_DIR = ROOT / "tests" / "node"
TOKEN, APPKEY = "node-sdk-token-0123456789", "node-sdk-appkey"
EN = "The quick brown fox jumps over the lazy dog. It was a sunny day by the river."


@pytest.fixture(scope="module")
def node_sdk() -> Path:
    """tests/node with its node_modules (npm ci from package-lock.json when missing)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "Node.js and npm are needed (Debian: apt-get install nodejs npm)"
    if not (NODE_DIR / "node_modules" / "alibabacloud-nls").is_dir():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return NODE_DIR


@pytest.fixture(scope="module")
def node_bridge(
    nats_url: str,
    light_engine: EngineProcess,
    tts_engine: EngineProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> BridgeProcess:
    """A bridge that wants a token and an appkey, in front of the light ASR and TTS engines."""
    proc = BridgeProcess(
        nats_url, tmp_path_factory.mktemp("logs"), APPTOKEN=TOKEN, APPKEY=APPKEY
    ).start()
    yield proc
    proc.stop()


def run_node(sdk: Path, bridge: BridgeProcess, *args: str, token: str = TOKEN) -> dict[str, Any]:
    """One run of tests/node/nls_run.js (it ends itself within 60 s)."""
    argv = ["node", str(sdk / "nls_run.js"), args[0], f"{bridge.ws_url}/ws/v1", token, APPKEY]
    done = subprocess.run([*argv, *args[1:]], cwd=sdk, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def names(run: dict[str, Any]) -> list[str]:
    return [e["name"] for e in run["events"]]


def pcm_file(tmp_path: Path, clip: str) -> Path:
    with wave.open(str(DATA / clip)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1
        frames = w.readframes(w.getnframes())
    path = tmp_path / "audio.pcm"
    path.write_bytes(frames)
    return path


def test_transcription(node_sdk: Path, node_bridge: BridgeProcess, tmp_path: Path) -> None:
    run = run_node(node_sdk, node_bridge, "transcribe", str(pcm_file(tmp_path, "en_fox.wav")))
    assert run["error"] is None, run
    got = names(run)
    assert got[0] == "TranscriptionStarted" and got[-1] == "TranscriptionCompleted", got
    assert "SentenceBegin" in got and "SentenceEnd" in got, got
    assert len({e["task_id"] for e in run["events"]}) == 1
    text = " ".join(e["payload"]["result"] for e in run["events"] if e["name"] == "SentenceEnd")
    assert wer(FOX, text) <= 0.2, text


def test_recognition(node_sdk: Path, node_bridge: BridgeProcess, tmp_path: Path) -> None:
    pcm = str(pcm_file(tmp_path, "en_fox.wav"))
    run = run_node(node_sdk, node_bridge, "recognize", pcm)
    assert run["error"] is None, run
    got = names(run)
    assert got[0] == "RecognitionStarted" and got[-1] == "RecognitionCompleted", got
    assert wer(FOX, run["events"][-1]["payload"]["result"]) <= 0.2, run["events"][-1]


@pytest.mark.parametrize(
    ("mode", "fmt", "rate"), [("synthesize", "wav", 24000), ("long", "mp3", 16000)]
)
def test_synthesis(
    node_sdk: Path, node_bridge: BridgeProcess, tmp_path: Path, mode: str, fmt: str, rate: int
) -> None:
    out = tmp_path / f"speech.{fmt}"
    params = json.dumps({"voice": "英文男", "format": fmt, "sample_rate": rate})
    run = run_node(node_sdk, node_bridge, mode, str(out), EN, params)
    assert run["error"] is None, run
    assert names(run)[-1] == "SynthesisCompleted", names(run)
    namespace = "SpeechLongSynthesizer" if mode == "long" else "SpeechSynthesizer"
    assert {e["namespace"] for e in run["events"]} == {namespace}
    assert run["audio_bytes"] == out.stat().st_size > 0
    audio = decode(out.read_bytes(), fmt, rate)
    assert audio.rate == rate and fits_text(audio.seconds, EN) and audio.peak > 0.05


def test_round_trip(node_sdk: Path, node_bridge: BridgeProcess, tmp_path: Path) -> None:
    """Speech made with the SDK's synthesizer (raw PCM, 16 kHz) is what its transcriber hears."""
    pcm = tmp_path / "speech.pcm"
    params = json.dumps({"voice": "英文男", "format": "pcm", "sample_rate": 16000})
    made = run_node(node_sdk, node_bridge, "synthesize", str(pcm), EN, params)
    assert made["error"] is None and made["audio_bytes"] > 32000, made
    # FunSpeech's `language` extension rides in the SDK's start parameters
    heard = run_node(node_sdk, node_bridge, "transcribe", str(pcm), json.dumps({"language": "en"}))
    assert heard["error"] is None, heard
    text = " ".join(e["payload"]["result"] for e in heard["events"] if e["name"] == "SentenceEnd")
    assert wer(EN, text) <= 0.2, text


def test_errors(node_sdk: Path, node_bridge: BridgeProcess, tmp_path: Path) -> None:
    """What the SDK's handlers get: TaskFailed with the NLS status for an unsupported sample
    rate (41010101), an unknown voice (40000003) and a wrong token (40000001, as NLS: after
    the upgrade); the bridge keeps serving."""
    pcm = str(pcm_file(tmp_path, "en_fox.wav"))
    bad_rate = run_node(
        node_sdk, node_bridge, "transcribe", pcm, json.dumps({"sample_rate": 44100})
    )
    assert bad_rate["error"] and "TaskFailed" in bad_rate["error"], bad_rate
    assert names(bad_rate) == ["TaskFailed"] and bad_rate["events"][0]["status"] == 41010101
    out = str(tmp_path / "x.wav")
    voice = run_node(
        node_sdk, node_bridge, "synthesize", out, "Hi.", json.dumps({"voice": "nobody"})
    )
    assert names(voice) == ["TaskFailed"] and voice["events"][0]["status"] == 40000003, voice
    assert voice["audio_bytes"] == 0
    denied = run_node(node_sdk, node_bridge, "transcribe", pcm, token="wrong-token-0123456789")
    assert names(denied) == ["TaskFailed"] and denied["events"][0]["status"] == 40000001, denied
    again = run_node(node_sdk, node_bridge, "recognize", pcm)
    assert names(again)[-1] == "RecognitionCompleted", again
