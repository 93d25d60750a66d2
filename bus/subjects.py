"""The subject map (version 1.1). Every subject starts with the prefix `fs.v1`, or
`<namespace>.fs.v1` when FUNSPEECH_NAMESPACE keeps a deployment apart on a shared NATS.

Entry subjects (any NATS client; every engine of the task serves them in queue group "<task>",
which it leaves while it is full, so a full bus answers "no responders" at once):
  fs.v1.asr.open[.<model>]            request/reply  AsrOpen -> OpenReply (the session's subjects)
  fs.v1.asr.recognize[.<model>]       request/reply  audio body, params in headers -> Recognition

Per engine (bus/client.py picks the least-loaded engine from the heartbeats):
  fs.v1.engines.heartbeat             engine -> all      EngineInfo, every HEARTBEAT_S and on change
  fs.v1.engines.discover              client -> engines  (empty) engines answer with a heartbeat now
  fs.v1.<task>.<engine>.open          request/reply      as the entry subject, on that engine
  fs.v1.<task>.<engine>.ping          request/reply      liveness probe
  fs.v1.asr.<engine>.s.<sid>.audio    client -> engine   raw PCM s16le mono, <= MAX_PAYLOAD bytes
  fs.v1.asr.<engine>.s.<sid>.ctl      client -> engine   AsrControl
  <events subject from AsrOpen>       engine -> client   AsrEvent, in order

Audio and control of one session share one engine subscription (`fs.v1.asr.<engine>.s.>`), so
a stop is never processed before the audio published ahead of it. Model ids go into subjects as
they are (a dot makes an extra token; engines subscribe to exact subjects).
"""

from __future__ import annotations

import re
from typing import Literal

VERSION = "1.1"
MAX_PAYLOAD = 256 * 1024  # no streamed message (audio chunk) is larger
HEARTBEAT_S = 0.5  # engines announce themselves this often
SUSPECT_AFTER_S = 1.2  # a silent engine gets pinged after this long
PING_TIMEOUT_S = 0.5  # and is declared gone if the ping is not answered in time
ENCODING_HEADER = "Fs-Encoding"  # "json": replies and events as JSON instead of msgpack
EVENT_HEADER = "Fs-Event"  # TTS messages: "audio" (raw audio body) or a TtsEvent type
TRACE_HEADER = "Fs-Trace"  # one-shot requests: the client's task id, for the engine's logs

Task = Literal["asr", "tts"]
_NAMESPACE = re.compile(r"^[A-Za-z0-9_-]*$")


class Subjects:
    """The subjects of one deployment namespace ("" = the default, `fs.v1`)."""

    def __init__(self, namespace: str = "") -> None:
        if not _NAMESPACE.match(namespace):
            raise ValueError(
                f"Invalid FUNSPEECH_NAMESPACE {namespace!r}: use letters, digits, '-' and '_'"
            )
        self.namespace = namespace
        self.prefix = f"{namespace}.fs.v1" if namespace else "fs.v1"
        self.heartbeat = f"{self.prefix}.engines.heartbeat"
        self.discover = f"{self.prefix}.engines.discover"

    def service(self, task: Task) -> str:
        """NATS micro service name of a task's engines: funspeech-asr, <ns>-funspeech-tts."""
        name = f"funspeech-{task}"
        return f"{self.namespace}-{name}" if self.namespace else name

    def entry(self, task: Task, verb: str, model: str | None = None) -> str:
        """Entry subject served in queue group `task`, e.g. fs.v1.asr.open.whisper-base."""
        subject = f"{self.prefix}.{task}.{verb}"
        return f"{subject}.{model}" if model else subject

    def engine(self, task: Task, engine_id: str, verb: str) -> str:
        """A subject of one engine: fs.v1.asr.<engine>.open / .ping."""
        return f"{self.prefix}.{task}.{engine_id}.{verb}"

    def session_wildcard(self, task: Task, engine_id: str) -> str:
        return f"{self.prefix}.{task}.{engine_id}.s.>"

    def session(self, task: Task, engine_id: str, session_id: str, kind: str) -> str:
        """kind: audio / ctl (ASR), text / ctl (TTS)."""
        return f"{self.prefix}.{task}.{engine_id}.s.{session_id}.{kind}"

    def bucket(self, name: str) -> str:
        """A JetStream bucket or stream name of this namespace: fs_voices, blue_fs_voices."""
        return f"{self.namespace}_fs_{name}" if self.namespace else f"fs_{name}"

    def events_wildcard(self, client_id: str) -> str:
        return f"{self.prefix}.events.{client_id}.*"

    def events(self, client_id: str, session_id: str) -> str:
        return f"{self.prefix}.events.{client_id}.{session_id}"


DEFAULT = Subjects()
