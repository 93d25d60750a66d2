"""The subject map (version 1). Every subject starts with PREFIX.

  fs.v1.engines.heartbeat             engine -> all      EngineInfo, every HEARTBEAT_S and on change
  fs.v1.engines.discover              client -> engines  (empty) engines answer with a heartbeat now
  fs.v1.asr.<engine>.open             request/reply      AsrOpen -> OpenReply (micro endpoint)
  fs.v1.asr.<engine>.ping             request/reply      liveness probe (micro endpoint)
  fs.v1.asr.<engine>.s.<sid>.audio    client -> engine   raw PCM s16le mono, <= MAX_PAYLOAD bytes
  fs.v1.asr.<engine>.s.<sid>.ctl      client -> engine   AsrControl
  <events subject from AsrOpen>       engine -> client   AsrEvent, in order

Audio and control of one session share one engine subscription (`fs.v1.asr.<engine>.s.>`), so
a stop is never processed before the audio published ahead of it.
"""

PREFIX = "fs.v1"
VERSION = "1.0"
MAX_PAYLOAD = 256 * 1024  # no bus message is larger
HEARTBEAT_S = 0.5  # engines announce themselves this often
SUSPECT_AFTER_S = 1.2  # a silent engine gets pinged after this long
PING_TIMEOUT_S = 0.5  # and is declared gone if the ping is not answered in time

HEARTBEAT = f"{PREFIX}.engines.heartbeat"
DISCOVER = f"{PREFIX}.engines.discover"
ASR_SERVICE = "funspeech-asr"  # NATS micro service name of ASR engines


def asr_open(engine_id: str) -> str:
    return f"{PREFIX}.asr.{engine_id}.open"


def asr_ping(engine_id: str) -> str:
    return f"{PREFIX}.asr.{engine_id}.ping"


def asr_session_wildcard(engine_id: str) -> str:
    return f"{PREFIX}.asr.{engine_id}.s.>"


def asr_audio(engine_id: str, session_id: str) -> str:
    return f"{PREFIX}.asr.{engine_id}.s.{session_id}.audio"


def asr_control(engine_id: str, session_id: str) -> str:
    return f"{PREFIX}.asr.{engine_id}.s.{session_id}.ctl"


def events_wildcard(client_id: str) -> str:
    return f"{PREFIX}.events.{client_id}.*"


def events(client_id: str, session_id: str) -> str:
    return f"{PREFIX}.events.{client_id}.{session_id}"
