"""Speech recognition over the FunSpeech bus with nothing but nats-py: no FunSpeech code.

    pip install nats-py
    python asr_over_nats.py --nats nats://127.0.0.1:4222 speech.wav

A 16-bit mono WAV file is recognised twice: with one request (fs.v1.asr.recognize), then as a
realtime session (fs.v1.asr.open, audio in 100 ms chunks, events as they come). Everything is
JSON because the requests ask for it (JSON open body; `Fs-Encoding: json` header).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import wave

import nats
from nats.errors import NoRespondersError


async def one_shot(nc: nats.NATS, prefix: str, pcm: bytes, rate: int) -> None:
    headers = {"sample_rate": str(rate), "Fs-Encoding": "json"}
    msg = await nc.request(f"{prefix}.asr.recognize", pcm, timeout=120, headers=headers)
    reply = json.loads(msg.data)
    if not reply.get("ok", True):
        raise SystemExit(f"one-shot failed: {reply['code']} {reply['message']}")
    print("one-shot:", reply.get("text", ""))
    for seg in reply.get("segments", []):
        print(f"  {seg.get('begin_ms', 0)}-{seg.get('time_ms', 0)} ms: {seg['text']}")


async def realtime(nc: nats.NATS, prefix: str, pcm: bytes, rate: int) -> None:
    events_subject = nc.new_inbox()
    events: asyncio.Queue[dict] = asyncio.Queue()
    acked = 0
    credit = asyncio.Event()

    async def on_event(msg) -> None:
        nonlocal acked
        event = json.loads(msg.data)
        if event.get("acked_bytes", 0) > acked:  # flow control: audio the engine has taken
            acked = event["acked_bytes"]
            credit.set()
        if event["type"] != "ack":
            await events.put(event)

    sub = await nc.subscribe(events_subject, cb=on_event)
    request = {"events_subject": events_subject, "sample_rate": rate}
    request["params"] = {"enable_intermediate_result": True}
    msg = await nc.request(f"{prefix}.asr.open", json.dumps(request).encode(), timeout=5)
    reply = json.loads(msg.data)
    if not reply["ok"]:
        raise SystemExit(f"open failed: {reply['code']} {reply['message']}")
    window, step = reply["window_bytes"], rate * 2 // 10  # 100 ms chunks
    for pos in range(0, len(pcm), step):
        while pos - acked > window:  # never more than the window ahead of the engine
            credit.clear()
            await asyncio.wait_for(credit.wait(), 30)
        await nc.publish(reply["audio_subject"], pcm[pos : pos + step])
    stop = {"op": "stop", "sent_bytes": len(pcm)}
    await nc.publish(reply["control_subject"], json.dumps(stop).encode())
    while True:
        event = await asyncio.wait_for(events.get(), 120)
        if event["type"] == "end":
            print(f"sentence {event['index']}: {event['text']}")
        elif event["type"] == "error":
            raise SystemExit(f"session failed: {event['code']} {event['message']}")
        elif event["type"] == "completed":
            print(f"completed: {event.get('duration_ms', 0)} ms of audio")
            break
    await sub.unsubscribe()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("wav", help="16-bit mono WAV file")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--prefix", default="fs.v1", help="<namespace>.fs.v1 with a namespace")
    args = parser.parse_args()
    with wave.open(args.wav) as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise SystemExit("need a 16-bit mono WAV file")
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    nc = await nats.connect(args.nats)
    try:
        await one_shot(nc, args.prefix, pcm, rate)
        await realtime(nc, args.prefix, pcm, rate)
    except NoRespondersError:
        print("no ASR engine with room is running on this bus", file=sys.stderr)
        return 1
    finally:
        await nc.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
