"""One decode scheduler per light backend: every Whisper decode pads to a 30 s window, so all of
them share `slots` workers: finals and one-shot jobs FIFO, before partials."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from engines.asr.base import AsrBackend


class DecodeScheduler:
    """All decodes of one backend: `slots` at once, finals FIFO before partials."""

    def __init__(self, backend: AsrBackend, slots: int) -> None:
        self.backend = backend
        self.slots = slots
        self.busy = 0
        self._finals: deque[asyncio.Future[None]] = deque()
        self._partials: deque[asyncio.Future[None]] = deque()
        self.counts = {"finals": 0, "partials": 0, "partials_skipped": 0}
        self.wall = {"finals": 0.0, "partials": 0.0}

    @property
    def queued(self) -> int:
        return len(self._finals) + len(self._partials)

    async def run(
        self,
        fn: Callable[..., Any],
        *args: Any,
        final: bool,
        on_start: Callable[[], None] | None = None,
    ) -> Any:
        """`fn(*args)` in a slot; `on_start` is called when the slot is taken."""
        await self._acquire(final)
        if on_start is not None:
            on_start()
        job = asyncio.ensure_future(self.backend.run_blocking(fn, *args))
        job.add_done_callback(lambda _: self._release())  # a slot frees when the work ends
        kind = "finals" if final else "partials"
        t0 = time.perf_counter()
        result = await asyncio.shield(job)
        self.counts[kind] += 1
        self.wall[kind] += time.perf_counter() - t0
        return result

    async def _acquire(self, final: bool) -> None:
        if self.busy < self.slots:  # then nobody waits: a release hands slots on
            self.busy += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self._finals if final else self._partials
        waiting.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # the slot was handed over just before the cancel
            elif fut in waiting:
                waiting.remove(fut)
            raise

    def _release(self) -> None:
        for waiting in (self._finals, self._partials):
            while waiting:
                fut = waiting.popleft()
                if not fut.done():
                    fut.set_result(None)  # the slot passes on, busy unchanged
                    return
        self.busy -= 1

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {"queue_depth": self.queued, "busy_slots": self.busy}
        out |= {"slots": self.slots, **self.counts}
        for kind in ("finals", "partials"):  # mean wall time of one decode, ms
            out[f"{kind[:-1]}_wall_ms_avg"] = 1000 * self.wall[kind] / max(1, self.counts[kind])
        return out
