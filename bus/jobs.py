"""Async (long-text) TTS jobs on JetStream: durable, any engine works on any part.

  stream fs_jobs (work queue)  <prefix>.jobs.tts.work.{split,part,assemble}   engines with presets
                               <prefix>.jobs.tts.clone.{split,part,assemble}  engines that clone
                               <prefix>.jobs.tts.notify                       bridges (callbacks)
  KV     fs_tts_jobs           task id -> TtsJob (state, progress, subtitles)
  object fs_tts_audio          <task>.text, <task>.part-<n> (JobPart), <task>.audio (the result)

A job is split into parts by the first engine free; parts go to any engine with room; the engine
that stores the last part queues the assembly. Work items are acked only after their result and
the job state are stored, so an engine that dies loses nothing: the item is redelivered, and
results are written under fixed names, so doing an item twice changes nothing. Job state
changes are compare-and-set on the KV revision; publishes carry a `Nats-Msg-Id`, so a repeat
within the duplicate window is dropped. Everything expires after the retention
(TTS_ASYNC_RETENTION, 7 days as NLS).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import IO

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, ObjectInfo, RetentionPolicy, StreamConfig
from nats.js.errors import (
    BucketNotFoundError,
    InvalidKeyError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.errors import Error as JetStreamError
from nats.js.kv import KeyValue
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, OBJ_STREAM_TEMPLATE, ObjectStore

from bus.schemas import (
    JobPart,
    JobRoute,
    JobSentence,
    JobSentences,
    JobWork,
    TtsJob,
    TtsParams,
    decode,
    encode,
)
from bus.streams import raise_replicas
from bus.subjects import Subjects
from bus.voices import no_jetstream

OP_TIMEOUT_S = 10.0  # one JetStream operation
ACK_WAIT_S = 10.0  # a worker that says nothing for this long has its item redelivered
KEEP_ALIVE_S = ACK_WAIT_S / 4  # how often a busy worker (engine or bridge) says "still on it"
MAX_DELIVER = 8  # an item handed out this many times without success fails its job
DUPLICATE_WINDOW_S = 120.0  # a publish repeated within this window is dropped (Nats-Msg-Id)
NOTIFY_ACK_WAIT_S = 15.0  # a bridge that says nothing for this long: the callback goes elsewhere
CAS_TRIES = 100
DEFAULT_RETENTION_S = 7 * 86400.0  # NLS keeps results 7 days
ROUTES: tuple[JobRoute, ...] = ("preset", "clone")
FINISHED = ("SUCCESS", "FAILED")


class JobStoreError(Exception):
    """The job store can't be used; the message says why (JetStream missing: and the fix)."""


class JobStore:
    def __init__(
        self,
        js: JetStreamContext,
        subjects: Subjects,
        kv: KeyValue,
        objects: ObjectStore,
        retention_s: float | None = None,
        replicas: int = 1,
    ) -> None:
        self.js = js
        self.subjects = subjects
        self.kv = kv
        self.objects = objects
        self.retention_s = retention_s
        self.replicas = replicas
        self.stream = subjects.bucket("jobs")
        self.objects_bucket = subjects.bucket("tts_audio")
        self.notify_subject = f"{subjects.prefix}.jobs.tts.notify"

    @classmethod
    async def open(
        cls,
        nc: Client,
        subjects: Subjects,
        *,
        replicas: int = 1,
        retention_s: float | None = None,
    ) -> JobStore:
        """Open (creating when missing) the stream and buckets. The services pass
        TTS_ASYNC_RETENTION, which an existing stream and buckets are brought to; a client
        passes None and keeps what is there (DEFAULT_RETENTION_S when it creates them).
        JobStoreError without JetStream (its message names the fix)."""
        js = nc.jetstream(timeout=OP_TIMEOUT_S)
        kv, objects = await _create(js, subjects, replicas, retention_s)
        return cls(js, subjects, kv, objects, retention_s, replicas)

    async def ensure(self) -> None:
        """Create the stream and buckets again if they are gone (a nats-server that lost its
        store); the handles stay valid."""
        await _create(self.js, self.subjects, self.replicas, self.retention_s)

    # ---- clients (bridge, internal services)
    async def submit(
        self,
        text: str,
        params: TtsParams,
        *,
        notify_url: str | None = None,
        route: JobRoute = "preset",
        public_url: str = "",
    ) -> TtsJob:
        """Accept a job: its text into the object store, its state into the KV bucket, a split
        item into the work queue. When this returns, the job is durable."""
        now = time.time()
        job = TtsJob(
            task_id=uuid.uuid4().hex,
            params=params,
            text_chars=len(text),
            route=route,
            notify_url=notify_url,
            public_url=public_url,
            created_at=now,
            updated_at=now,
        )
        await self.objects.put(f"{job.task_id}.text", text.encode())
        try:
            await self.kv.create(job.task_id, encode(job))
            await self.queue(job, JobWork(kind="split", task_id=job.task_id))
        except BaseException:
            with contextlib.suppress(Exception):
                await self.kv.delete(job.task_id)
                await self.objects.delete(f"{job.task_id}.text")
            raise
        return job

    async def get(self, task_id: str) -> TtsJob | None:
        """The job; None when there is no such job (any more). Bus trouble raises."""
        try:
            entry = await self.kv.get(task_id)
        except (KeyNotFoundError, InvalidKeyError):
            return None
        return decode(TtsJob, entry.value) if entry.value else None

    async def wait(self, task_id: str, timeout: float, interval: float = 0.5) -> TtsJob:
        """Poll until the job is finished; TimeoutError after `timeout` s, KeyError when there
        is no such job."""
        async with asyncio.timeout(timeout):
            while True:
                job = await self.get(task_id)
                if job is None:
                    raise KeyError(task_id)
                if job.status in FINISHED:
                    return job
                await asyncio.sleep(interval)

    async def audio_info(self, task_id: str) -> ObjectInfo | None:
        try:
            return await self.objects.get_info(f"{task_id}.audio")
        except (NotFoundError, JetStreamError):
            return None

    async def audio(self, task_id: str) -> bytes | None:
        """The whole result in memory (small jobs, tests); stream_audio for downloads;
        sentences(task_id) for its subtitles."""
        if await self.audio_info(task_id) is None:
            return None
        return b"".join([chunk async for chunk in self.stream_audio(task_id)])

    def stream_audio(self, task_id: str) -> AsyncIterator[bytes]:
        """The result chunk by chunk (128 KiB each), checked against its digest at the end.
        Raises JobStoreError when it is gone or the bus stops answering."""
        return self._chunks(f"{task_id}.audio")

    async def _chunks(self, name: str) -> AsyncIterator[bytes]:
        """An object's chunks from an ordered consumer that is always unsubscribed (nats.py's
        ObjectStore.get leaves its subscription behind when interrupted, and a connection
        then waits for it on drain)."""
        try:
            info = await self.objects.get_info(name)
        except (NotFoundError, JetStreamError):
            raise JobStoreError(f"no object {name}") from None
        if not info.size:
            return
        subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=self.objects_bucket, obj=info.nuid)
        sub = await self.js.subscribe(subject, ordered_consumer=True)
        digest = hashlib.sha256()
        received = 0
        try:
            while received < info.size:
                try:
                    msg = await sub.next_msg(timeout=OP_TIMEOUT_S)
                except NatsError as exc:
                    raise JobStoreError(f"reading {name} stopped: {exc!r}") from None
                digest.update(msg.data)
                received += len(msg.data)
                yield msg.data
        finally:
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()
        expected = (info.digest or "").split("=", 1)[-1]
        if expected and base64.urlsafe_b64encode(digest.digest()).decode() != expected:
            raise JobStoreError(f"{name} does not match its digest")

    async def _read(self, name: str) -> bytes:
        return b"".join([chunk async for chunk in self._chunks(name)])

    # ---- workers (engines, bridges)
    def work_subject(self, route: JobRoute, kind: str = "*") -> str:
        middle = "work" if route == "preset" else "clone"
        return f"{self.subjects.prefix}.jobs.tts.{middle}.{kind}"

    async def queue(self, job: TtsJob, work: JobWork) -> None:
        """Publish a work item on the job's route; the message id makes a repeat within the
        duplicate window a no-op."""
        msg_id = f"{work.kind}-{work.task_id}-{work.index}"
        await self.js.publish(
            self.work_subject(job.route, work.kind),
            encode(work),
            stream=self.stream,
            headers={"Nats-Msg-Id": msg_id},
        )

    async def queue_notify(self, task_id: str) -> None:
        """Ask a bridge to call the job's notify_url (once per job, retried until delivered)."""
        await self.js.publish(
            self.notify_subject,
            task_id.encode(),
            stream=self.stream,
            headers={"Nats-Msg-Id": f"notify-{task_id}"},
        )

    async def work_subscription(self, route: JobRoute) -> JetStreamContext.PullSubscription:
        """The engines' shared pull consumer of one route's work items."""
        name = "tts_workers" if route == "preset" else "tts_clone_workers"
        return await self.js.pull_subscribe(
            self.work_subject(route),
            durable=self.subjects.bucket(name),
            stream=self.stream,
            config=ConsumerConfig(ack_wait=ACK_WAIT_S, max_deliver=MAX_DELIVER + 1),
        )

    async def notify_subscription(self) -> JetStreamContext.PullSubscription:
        """The bridges' shared pull consumer of finished jobs to call back."""
        return await self.js.pull_subscribe(
            self.notify_subject,
            durable=self.subjects.bucket("tts_notifiers"),
            stream=self.stream,
            config=ConsumerConfig(ack_wait=NOTIFY_ACK_WAIT_S, max_deliver=-1),
        )

    async def update(self, task_id: str, change: Callable[[TtsJob], bool]) -> TtsJob | None:
        """Compare-and-set: change(job) edits the job and says whether to store it; on a
        concurrent write it runs again on the newer state. None when the job is gone."""
        for _ in range(CAS_TRIES):
            try:
                entry = await self.kv.get(task_id)
            except KeyNotFoundError:
                return None
            if not entry.value:
                return None
            job = decode(TtsJob, entry.value)
            if not change(job):
                return job
            job.updated_at = time.time()
            try:
                await self.kv.update(task_id, encode(job), last=entry.revision)
                return job
            except KeyWrongLastSequenceError:  # someone else wrote first: read again
                continue
        raise JobStoreError(f"job {task_id}: {CAS_TRIES} concurrent updates in a row")

    async def get_text(self, task_id: str) -> str:
        return (await self._read(f"{task_id}.text")).decode()

    async def put_part(self, task_id: str, index: int, part: JobPart) -> None:
        await self.objects.put(f"{task_id}.part-{index}", encode(part))

    async def get_part(self, task_id: str, index: int) -> JobPart:
        return decode(JobPart, await self._read(f"{task_id}.part-{index}"))

    async def put_audio(self, task_id: str, data: bytes | IO[bytes]) -> None:
        await self.objects.put(f"{task_id}.audio", data)

    async def put_sentences(self, task_id: str, sentences: list[JobSentence]) -> None:
        await self.objects.put(f"{task_id}.sentences", encode(JobSentences(sentences=sentences)))

    async def sentences(self, task_id: str) -> list[JobSentence]:
        """The sentences of a finished job, times in ms of its audio (kept out of the KV entry,
        which stays small however long the text)."""
        try:
            return decode(JobSentences, await self._read(f"{task_id}.sentences")).sentences
        except JobStoreError:
            return []

    async def drop_parts(self, job: TtsJob) -> None:
        """The text and parts of a finished job (the result stays until the retention ends)."""
        names = [f"{job.task_id}.text"]
        names += [f"{job.task_id}.part-{index}" for index in range(job.parts_total)]
        for name in names:
            with contextlib.suppress(NotFoundError, JetStreamError):
                await self.objects.delete(name)


async def _create(
    js: JetStreamContext, subjects: Subjects, replicas: int, retention_s: float | None
) -> tuple[KeyValue, ObjectStore]:
    prefix = subjects.prefix
    kv_name, obj_name = subjects.bucket("tts_jobs"), subjects.bucket("tts_audio")
    age = retention_s or DEFAULT_RETENTION_S
    config = StreamConfig(
        name=subjects.bucket("jobs"),
        subjects=[
            f"{prefix}.jobs.tts.work.*",
            f"{prefix}.jobs.tts.clone.*",
            f"{prefix}.jobs.tts.notify",
        ],
        retention=RetentionPolicy.WORK_QUEUE,
        max_age=age,
        num_replicas=replicas,
        duplicate_window=min(DUPLICATE_WINDOW_S, age),
    )
    try:
        async with asyncio.timeout(OP_TIMEOUT_S):
            await _ensure_stream(js, config, retention_s is not None)
            try:
                kv = await js.key_value(kv_name)
                if retention_s is not None:
                    await _ensure_max_age(js, f"KV_{kv_name}", retention_s)
            except BucketNotFoundError:
                kv = await js.create_key_value(
                    bucket=kv_name, history=1, ttl=age, replicas=replicas
                )
            try:
                objects = await js.object_store(obj_name)
                if retention_s is not None:
                    stream = OBJ_STREAM_TEMPLATE.format(bucket=obj_name)
                    await _ensure_max_age(js, stream, retention_s)
            except (BucketNotFoundError, NotFoundError):
                objects = await js.create_object_store(bucket=obj_name, ttl=age, replicas=replicas)
    except (NatsError, TimeoutError) as exc:
        raise JobStoreError(no_jetstream(exc)) from None
    for stream in (config.name, f"KV_{kv_name}", OBJ_STREAM_TEMPLATE.format(bucket=obj_name)):
        await raise_replicas(js, stream, replicas)
    return kv, objects


async def _ensure_stream(js: JetStreamContext, config: StreamConfig, limits: bool) -> None:
    """Create the stream, or bring an existing one's subjects (and with `limits` its age
    and duplicate window) up to date."""
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        return
    current = info.config
    wanted = replace(current, subjects=config.subjects)
    if limits:
        wanted = replace(wanted, max_age=config.max_age, duplicate_window=config.duplicate_window)
    if wanted != current:
        await js.update_stream(wanted)


async def _ensure_max_age(js: JetStreamContext, stream: str, max_age: float) -> None:
    """A bucket's TTL follows the setting (TTS_ASYNC_RETENTION) when it changed."""
    current = (await js.stream_info(stream)).config
    if current.max_age != max_age:
        window = min(current.duplicate_window or DUPLICATE_WINDOW_S, max_age)
        await js.update_stream(replace(current, max_age=max_age, duplicate_window=window))


async def keep_alive(msg: Msg, every: float = KEEP_ALIVE_S) -> None:
    """Tell JetStream a delivered message is still being worked on, until cancelled."""
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):
            await msg.in_progress()
