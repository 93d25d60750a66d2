"""A live view of the engines, fed by their heartbeats. Engines that fall silent are pinged
and dropped when the ping goes unanswered, so sessions on a dead engine fail fast."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from bus.schemas import EngineInfo, decode
from bus.subjects import HEARTBEAT_S, PING_TIMEOUT_S, SUSPECT_AFTER_S, Subjects, Task

log = logging.getLogger("funspeech.bus")


class EngineDirectory:
    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        on_engine_lost: Callable[[str], None] | None = None,
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self._on_lost = on_engine_lost
        self._engines: dict[str, EngineInfo] = {}
        self._seen: dict[str, float] = {}
        self._recent_opens: dict[str, int] = {}  # opens since that engine's last heartbeat
        self._changed = asyncio.Event()
        self._sub = None
        self._monitor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._subjects.heartbeat, cb=self._on_heartbeat)
        await self._nc.publish(self._subjects.discover, b"")
        self._monitor = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._monitor:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        if self._sub:
            with contextlib.suppress(NatsError):
                await self._sub.unsubscribe()

    def engines(self, task: Task | None = None) -> list[EngineInfo]:
        return [e for e in self._engines.values() if task is None or e.task == task]

    def get(self, engine_id: str) -> EngineInfo | None:
        return self._engines.get(engine_id)

    def has_engines(self, task: Task = "asr") -> bool:
        return any(e.task == task for e in self._engines.values())

    def model_ids(self, task: Task = "asr") -> set[str]:
        return {m.id for e in self.engines(task) for m in e.models}

    def candidates(
        self, task: Task, model: str | None = None, exclude: set[str] | None = None
    ) -> list[EngineInfo]:
        """Engines of `task` that may take a session, least loaded first."""
        ready = []
        for e in self.engines(task):
            if e.draining or e.capacity <= 0 or (exclude and e.id in exclude):
                continue
            if model and all(m.id != model for m in e.models):
                continue
            used = e.active + self._recent_opens.get(e.id, 0)
            if used < e.capacity:
                ready.append((used / e.capacity, used, e))
        ready.sort(key=lambda item: (item[0], item[1]))
        return [e for _, _, e in ready]

    def note_open(self, engine_id: str) -> None:
        self._recent_opens[engine_id] = self._recent_opens.get(engine_id, 0) + 1

    async def wait_change(self, timeout: float) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def wait_for(
        self,
        count: int = 1,
        timeout: float = 30.0,
        task: Task | None = None,
        where: Callable[[EngineInfo], bool] | None = None,
    ) -> list[EngineInfo]:
        """Wait until at least `count` live engines (of `task`, matching `where`) are known."""

        def matching() -> list[EngineInfo]:
            return [e for e in self.engines(task) if where is None or where(e)]

        async with asyncio.timeout(timeout):
            while len(matching()) < count:
                await self.wait_change(0.5)
        return matching()

    async def _on_heartbeat(self, msg: Msg) -> None:
        info = decode(EngineInfo, msg.data)
        if info.gone:
            self._forget(info.id)
            return
        self._engines[info.id] = info
        self._seen[info.id] = time.monotonic()
        self._recent_opens[info.id] = 0
        self._changed.set()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S / 2)
            now = time.monotonic()
            silent = [i for i, t in self._seen.items() if now - t > SUSPECT_AFTER_S]
            for engine_id in silent:
                if not await self._ping(engine_id):
                    log.warning("engine %s stopped responding; dropping it", engine_id)
                    self._forget(engine_id)

    async def _ping(self, engine_id: str) -> bool:
        info = self._engines.get(engine_id)
        if info is None:
            return False
        subject = self._subjects.engine(info.task, engine_id, "ping")
        try:
            await self._nc.request(subject, b"", timeout=PING_TIMEOUT_S)
        except (NatsTimeout, NoRespondersError):
            return False
        except NatsError:  # our own connection is down: we can't tell, keep the engine
            return True
        self._seen[engine_id] = time.monotonic()
        return True

    def _forget(self, engine_id: str) -> None:
        self._engines.pop(engine_id, None)
        self._seen.pop(engine_id, None)
        self._recent_opens.pop(engine_id, None)
        self._changed.set()
        if self._on_lost:
            self._on_lost(engine_id)
