"""The voice store: cloned voices in JetStream, seen by every engine on every machine at once.

Metadata in the KV bucket `fs_voices` (one key per voice), the prompt audio (16-bit mono WAV) in
the object store `fs_voice_audio`, named by its SHA-256. Voice names may be any letters (CJK
too): KV keys are the name in URL-safe base64. Deleting a voice removes both; engines watch the
bucket and drop what they cached.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable

from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NoKeysError, NotFoundError
from nats.js.errors import Error as JetStreamError
from nats.js.kv import KeyValue
from nats.js.object_store import OBJ_STREAM_TEMPLATE, ObjectStore

from bus.schemas import VoiceDesc, VoiceRecord, decode, encode
from bus.streams import raise_replicas
from bus.subjects import Subjects

log = logging.getLogger("funspeech.bus")

NAME = re.compile(r"^[\w\u4e00-\u9fff .\-]{1,64}$")  # letters (any script), digits, ". _ -", space
OP_TIMEOUT_S = 10.0
REPLICAS_UNSUPPORTED = 10074  # JetStream: replicas > 1 not supported in non-clustered mode


class VoiceStoreError(Exception):
    """The store can't do it; the message says why (and, for JetStream missing, the fix)."""


def check_name(name: str) -> str:
    name = name.strip()
    if not NAME.match(name) or name.startswith("."):
        raise ValueError(
            "A voice name is 1-64 letters (any script), digits, spaces, '.', '_' or '-'"
        )
    return name


def resolve_voice(name: str, voices: Iterable[VoiceDesc]) -> VoiceDesc | None:
    """The voice whose id, name or one of whose aliases is `name` (case-insensitive, surrounding
    spaces ignored); an exact id match wins over an alias. None when nothing matches."""
    key = name.strip().casefold()
    if not key:
        return None
    by_alias = None
    for voice in voices:
        if voice.id.casefold() == key:
            return voice
        if by_alias is None and (
            voice.name.casefold() == key or any(a.casefold() == key for a in voice.aliases)
        ):
            by_alias = voice
    return by_alias


def _key(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def _name(key: str) -> str:
    return base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)).decode()


class VoiceStore:
    def __init__(self, kv: KeyValue, objects: ObjectStore) -> None:
        self._kv = kv
        self._objects = objects

    @classmethod
    async def open(cls, nc: Client, subjects: Subjects, replicas: int = 1) -> VoiceStore:
        """Open (creating when missing) the buckets. Raises VoiceStoreError without JetStream."""
        js = nc.jetstream(timeout=OP_TIMEOUT_S)
        kv_name, obj_name = subjects.bucket("voices"), subjects.bucket("voice_audio")
        try:
            async with asyncio.timeout(OP_TIMEOUT_S):
                try:
                    kv = await js.key_value(kv_name)
                except BucketNotFoundError:
                    kv = await js.create_key_value(bucket=kv_name, history=1, replicas=replicas)
                try:
                    objects = await js.object_store(obj_name)
                except (BucketNotFoundError, NotFoundError):
                    objects = await js.create_object_store(bucket=obj_name, replicas=replicas)
        except (JetStreamError, TimeoutError) as exc:
            raise VoiceStoreError(no_jetstream(exc)) from None
        for stream in (f"KV_{kv_name}", OBJ_STREAM_TEMPLATE.format(bucket=obj_name)):
            await raise_replicas(js, stream, replicas)
        return cls(kv, objects)

    async def get(self, name: str) -> VoiceRecord | None:
        try:
            entry = await self._kv.get(_key(name))
        except KeyNotFoundError:
            return None
        return decode(VoiceRecord, entry.value) if entry.value else None

    async def list(self) -> list[VoiceRecord]:
        try:
            keys = await self._kv.keys()
        except NoKeysError:
            return []
        records = [await self.get(_name(k)) for k in keys]
        return sorted((r for r in records if r is not None), key=lambda r: r.created_at)

    async def put(
        self,
        name: str,
        wav: bytes,
        *,
        text: str,
        sample_rate: int,
        duration_ms: int,
        language: str = "",
        source: str = "api",
    ) -> VoiceRecord:
        """Store (or replace) a voice: the audio first, then the record that points at it."""
        name = check_name(name)
        digest = hashlib.sha256(wav).hexdigest()
        record = VoiceRecord(
            name=name,
            text=text.strip(),
            language=language,
            sample_rate=sample_rate,
            duration_ms=duration_ms,
            audio_sha256=digest,
            created_at=time.time(),
            source=source,  # type: ignore[arg-type]
        )
        old = await self.get(name)
        await self._objects.put(digest, wav)
        await self._kv.put(_key(name), encode(record))
        if old is not None and old.audio_sha256 != digest:
            await self._drop_audio(old.audio_sha256)
        return record

    async def delete(self, name: str) -> bool:
        record = await self.get(name)
        if record is None:
            return False
        await self._kv.delete(_key(name))
        await self._drop_audio(record.audio_sha256)
        return True

    async def audio(self, record: VoiceRecord) -> bytes:
        result = await self._objects.get(record.audio_sha256)
        return bytes(result.data or b"")

    async def watch(self, on_change: Callable[[str], Awaitable[None] | None]) -> asyncio.Task[None]:
        """Call on_change(name) for every voice put or deleted from now on."""
        watcher = await self._kv.watchall(include_history=False, ignore_deletes=False)

        async def run() -> None:
            async for entry in watcher:
                if entry is None:  # the initial values are done
                    continue
                result = on_change(_name(entry.key))
                if asyncio.iscoroutine(result):
                    await result

        return asyncio.create_task(run())

    async def _drop_audio(self, digest: str) -> None:
        """Delete an audio object unless another voice uses the same recording."""
        if any(r.audio_sha256 == digest for r in await self.list()):
            return
        with contextlib.suppress(NotFoundError, JetStreamError):
            await self._objects.delete(digest)


def no_jetstream(exc: BaseException) -> str:
    if getattr(exc, "err_code", None) == REPLICAS_UNSUPPORTED:
        return (
            f"JETSTREAM_REPLICAS asks for more than one copy, and this NATS server is not part "
            f"of a cluster ({exc}): set JETSTREAM_REPLICAS=1, or run a NATS cluster with "
            "JetStream (docs/deployment.md)"
        )
    return (
        f"JetStream is not available on this NATS ({exc.__class__.__name__}: {exc}). "
        "Cloned voices and async synthesis need it: run nats-server with -js (the funspeech "
        "launcher's own server has it) or enable `jetstream {}` in nats.conf"
    )
