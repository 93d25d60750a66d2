"""An engine's share of the async TTS jobs: it takes work items while it has room.

split: cut the text into parts at sentence ends and queue them; part: synthesize one part to raw
PCM with its sentence times and store it; assemble (queued by whoever stores the last part):
join the parts in order, encode the requested format, store it, mark the job SUCCESS and queue
the callback. Each item is acked only after its results are stored; a keep-alive tells
JetStream the item is still worked on, so a slow part is not handed to a second engine, and an
engine that dies has its items handed to another after ACK_WAIT_S.

Items run concurrently up to the engine's capacity less one (a slot stays free for interactive
requests), so a long job spreads over every engine with room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext

from bus import codes
from bus.jobs import FINISHED, MAX_DELIVER, JobStore, keep_alive
from bus.schemas import JobPart, JobRoute, JobSentence, JobWork, TtsEvent, TtsJob, decode
from engines.tts.encode import make_encoder, wav_header
from engines.tts.text import split_sentences

if TYPE_CHECKING:
    from engines.tts_engine import TtsEngine

log = logging.getLogger("funspeech.engine.jobs")

FETCH_WAIT_S = 2.0  # one long-poll for a work item
RETRY_DELAY_S = 1.0  # an item that failed for a passing reason is handed out again after this,
MAX_RETRY_DELAY_S = 30.0  # doubling with each delivery (a bus outage does not use up the tries)
REBIND_AFTER = 5  # fetch failures in a row before the consumer and stream are ensured again


class JobFailed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parts_of(sentences: list[str], max_chars: int) -> list[str]:
    """Sentences grouped into parts of at most max_chars (a longer sentence is a part alone),
    one sentence a line: a line end is a sentence end, so a part splits into these sentences
    again."""
    parts: list[list[str]] = []
    size = 0
    for sentence in sentences:
        if parts and size + 1 + len(sentence) <= max_chars:
            parts[-1].append(sentence)
            size += 1 + len(sentence)
        else:
            parts.append([sentence])
            size = len(sentence)
    return ["\n".join(part) for part in parts]


class JobWorker:
    def __init__(self, engine: TtsEngine, store: JobStore, part_chars: int) -> None:
        self.engine = engine
        self.store = store
        self.part_chars = part_chars
        self.slots = asyncio.Semaphore(max(1, engine.capacity - 1))
        self._running: set[asyncio.Task[None]] = set()
        self._subs: dict[JobRoute, JetStreamContext.PullSubscription] = {}

    def routes(self) -> list[JobRoute]:
        """Preset jobs when the backend has presets, clone jobs when it can clone."""
        backend = self.engine.backend
        return [
            r for r, on in (("preset", bool(backend.voices)), ("clone", backend.can_clone)) if on
        ]

    async def run(self) -> None:
        try:
            await asyncio.gather(*(self._pull(route) for route in self.routes()))
        finally:
            for task in list(self._running):  # shutting down: hand the items back at once
                task.cancel()
            for route in list(self._subs):
                await self._unsubscribe(route)

    async def _unsubscribe(self, route: JobRoute) -> None:
        """Unsubscribe, never drain, a pull subscription: nats.py's drain waits for late pull
        answers nobody will read (its fetch does not mark them done), so the connection's
        drain at shutdown would hang."""
        sub = self._subs.pop(route, None)
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _pull(self, route: JobRoute) -> None:
        failures = 0
        while not self.engine.draining:
            await self.engine.wait_room()
            await self.slots.acquire()
            msgs: list[Msg] = []
            try:
                sub = self._subs.get(route)
                if sub is None:
                    if failures:
                        await self.store.ensure()
                    sub = self._subs[route] = await self.store.work_subscription(route)
                msgs = await sub.fetch(1, timeout=FETCH_WAIT_S)
                failures = 0
            except (NatsTimeout, TimeoutError):
                pass  # nothing to do
            except asyncio.CancelledError:
                self.slots.release()
                raise
            except Exception as exc:  # the bus is away (a nats-server restart): try again
                if self.engine.draining:
                    self.slots.release()
                    return
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "async jobs: cannot fetch work (%s); retrying", exc or repr(exc))
                if failures % REBIND_AFTER == 0:
                    await self._unsubscribe(route)
                await asyncio.sleep(min(failures, 5))
            if not msgs:
                self.slots.release()
                continue
            for msg in msgs:
                if self.engine.draining:
                    with contextlib.suppress(Exception):
                        await msg.nak()
                    self.slots.release()
                else:
                    self._start(msg)

    def _start(self, msg: Msg) -> None:
        self.engine.oneshots += 1
        self.engine.load_changed()
        task = asyncio.create_task(self._take(msg))
        self._running.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self.slots.release()
        self.engine.oneshots -= 1
        self.engine.load_changed()

    async def _take(self, msg: Msg) -> None:
        try:
            work = decode(JobWork, msg.data)
        except ValueError as exc:
            log.warning("async jobs: dropping a malformed work item (%s)", exc)
            with contextlib.suppress(Exception):
                await msg.term()
            return
        alive = asyncio.create_task(keep_alive(msg))
        metrics = self.engine.metrics  # /metrics of the bridges (engines/metrics.py)
        if msg.metadata.num_delivered > 1:
            metrics.jobs_redelivered += 1
        try:
            try:
                await self._work(work, msg.metadata.num_delivered)
            except JobFailed as exc:
                await self._fail(work.task_id, exc.code, exc.message)
            await msg.ack()
            metrics.jobs_done += 1
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception as exc:  # the bus hiccuped: JetStream hands the item out again
            log.warning(
                "job %s: %s %d failed (%r); it will be retried",
                work.task_id,
                work.kind,
                work.index,
                exc,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            delay = min(RETRY_DELAY_S * 2 ** (msg.metadata.num_delivered - 1), MAX_RETRY_DELAY_S)
            with contextlib.suppress(Exception):
                await msg.nak(delay=delay)
        finally:
            alive.cancel()

    async def _work(self, work: JobWork, delivered: int) -> None:
        job = await self.store.get(work.task_id)
        if job is None:
            return  # expired, or never accepted: nothing to do
        if job.status in FINISHED:  # a repeat of an item whose engine died after the end
            await self._wrap_up(job, drop=work.kind == "assemble")
            return
        if delivered > MAX_DELIVER:
            raise JobFailed(
                codes.SERVER_ERROR,
                f"The {work.kind} step of the job failed {MAX_DELIVER} times (engines lost or "
                "the bus unavailable)",
            )
        if work.kind == "split":
            await self._split(job)
        elif work.kind == "part":
            await self._part(job, work)
        else:
            await self._assemble(job)

    async def _split(self, job: TtsJob) -> None:
        part_chars = job.part_chars or self.part_chars  # a repeated split cuts the same parts
        text = await self.store.get_text(job.task_id)
        sentences = await asyncio.to_thread(split_sentences, text)
        parts = parts_of(sentences, part_chars)
        if not parts:
            raise JobFailed(codes.INVALID_PARAMETER, "The text has nothing to speak")

        def set_total(state: TtsJob) -> bool:
            if state.parts_total:
                return False
            state.parts_total, state.part_chars = len(parts), part_chars
            return True

        state = await self.store.update(job.task_id, set_total)  # before any part can finish
        if state is None or state.status != "RUNNING":
            return
        for index, part in enumerate(parts):
            if index not in state.parts_done:
                work = JobWork(kind="part", task_id=job.task_id, index=index, text=part)
                await self.store.queue(state, work)
        log.info("job %s: %d chars in %d parts", job.task_id, job.text_chars, len(parts))

    async def _part(self, job: TtsJob, work: JobWork) -> None:
        done_before = work.index in job.parts_done
        if not done_before:  # else: stored before its engine died; only the marking is left
            part = await self._synthesize(job, work)
            await self.store.put_part(job.task_id, work.index, part)
        engine_id = self.engine.id

        def mark(state: TtsJob) -> bool:
            if work.index in state.parts_done:
                return False
            state.parts_done = sorted([*state.parts_done, work.index])
            if engine_id not in state.engines:
                state.engines = [*state.engines, engine_id]
            return True

        state = await self.store.update(job.task_id, mark)
        if state is None or state.status != "RUNNING":  # failed meanwhile: drop what we stored
            with contextlib.suppress(Exception):
                await self.store.objects.delete(f"{job.task_id}.part-{work.index}")
            return
        log.debug("job %s: part %d/%d done", job.task_id, len(state.parts_done), state.parts_total)
        if state.parts_total and len(state.parts_done) == state.parts_total:
            await self.store.queue(state, JobWork(kind="assemble", task_id=job.task_id))

    async def _synthesize(self, job: TtsJob, work: JobWork) -> JobPart:
        from engines.tts_engine import TtsError  # the engine module imports this one

        audio: list[bytes] = []
        sentences: list[JobSentence] = []

        def collect(kind: str, body: bytes) -> None:
            if kind == "audio":
                audio.append(body)
            elif kind == "sentence_end":
                event = decode(TtsEvent, body)
                sentences.append(
                    JobSentence(text=event.text, begin_ms=event.begin_ms, end_ms=event.end_ms)
                )

        params = job.params.model_copy(update={"format": "pcm"})
        try:
            await self.engine.speak(work.text, params, collect)
        except TtsError as exc:  # unknown voice, a clone this engine can't speak, ...
            raise JobFailed(exc.code, exc.message) from None
        except ValueError as exc:  # what the backend can't do, said by the backend
            raise JobFailed(codes.INVALID_PARAMETER, str(exc)) from None
        return JobPart(
            pcm=b"".join(audio),
            sample_rate=params.sample_rate,
            sentences=sentences,
            engine_id=self.engine.id,
        )

    async def _assemble(self, job: TtsJob) -> None:
        rate, fmt = job.params.sample_rate, job.params.format
        sentences: list[JobSentence] = []
        samples = 0
        with tempfile.TemporaryFile() as out:
            encoder = make_encoder("pcm" if fmt == "wav" else fmt, rate)
            if fmt == "wav":
                out.write(wav_header(rate, 0))  # rewritten with the real size at the end
            for index in range(job.parts_total):
                part = await self.store.get_part(job.task_id, index)
                if part.sample_rate != rate:
                    raise JobFailed(codes.SERVER_ERROR, f"part {index} is at {part.sample_rate} Hz")
                offset_ms = samples * 1000 / rate
                for s in part.sentences:
                    begin, end = round(offset_ms + s.begin_ms), round(offset_ms + s.end_ms)
                    sentences.append(JobSentence(text=s.text, begin_ms=begin, end_ms=end))
                pcm = np.frombuffer(part.pcm, dtype="<i2")
                samples += pcm.size
                await asyncio.to_thread(_encode, out, encoder.feed, pcm)
            await asyncio.to_thread(_encode, out, lambda _: encoder.finish(), None)
            size = out.tell()
            if fmt == "wav":
                out.seek(0)
                out.write(wav_header(rate, size - 44))
            out.seek(0)
            await self.store.put_audio(job.task_id, out)
        await self.store.put_sentences(job.task_id, sentences)
        duration_ms = round(samples * 1000 / rate)

        def succeed(state: TtsJob) -> bool:
            if state.status != "RUNNING":
                return False
            state.status = "SUCCESS"
            state.sentence_count = len(sentences)
            state.audio_bytes = size
            state.duration_ms = duration_ms
            state.completed_at = time.time()
            return True

        done = await self.store.update(job.task_id, succeed)
        log.info(
            "job %s done: %d chars, %.1f s of audio from %d parts",
            job.task_id,
            job.text_chars,
            duration_ms / 1000,
            job.parts_total,
        )
        if done is not None:
            await self._wrap_up(done, drop=True)

    async def _fail(self, task_id: str, code: int, message: str) -> None:
        failed: list[bool] = []

        def fail(state: TtsJob) -> bool:
            if state.status != "RUNNING":
                return False
            state.status, state.error_code, state.error_message = "FAILED", code, message
            state.completed_at = time.time()
            failed[:] = [True]
            return True

        log.info("job %s failed: %d %s", task_id, code, message)
        state = await self.store.update(task_id, fail)
        if failed:  # this engine failed it (not a repeat of another's failure)
            self.engine.metrics.jobs_failed += 1
        if state is not None:
            await self._wrap_up(state, drop=True)

    async def _wrap_up(self, job: TtsJob, drop: bool) -> None:
        """After the end (and again for any repeated item): drop the parts, queue the callback
        once (the CAS flag; the message id covers a crash between the two)."""
        if drop:
            await self.store.drop_parts(job)
        if not job.notify_url or job.notify_queued:
            return
        await self.store.queue_notify(job.task_id)

        def queued(state: TtsJob) -> bool:
            if state.notify_queued:
                return False
            state.notify_queued = True
            return True

        await self.store.update(job.task_id, queued)


def _encode(out: IO[bytes], encode: Callable[[Any], bytes], pcm: Any) -> None:
    out.write(encode(pcm))
