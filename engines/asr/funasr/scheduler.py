"""Cross-session micro-batching: requests of one kind queue up while the previous batch runs,
and the next batch takes all of them (up to max_batch) in one executor call.

With wait_s > 0 a batch also waits up to wait_s after its first request for more to arrive,
but never longer than it takes `target()` requests to queue (target: how many requests can
come at all, e.g. the live sessions). Realtime sessions send their chunk steps at staggered
moments, so without a wait most batches hold one request and the per-call model overhead is
paid per session; with a few tens of ms, batches hold several. A lone session is never
delayed (target 1)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

RunBlocking = Callable[..., Awaitable[object]]


class BatchScheduler(Generic[T, R]):
    def __init__(
        self,
        name: str,
        run_blocking: RunBlocking,
        fn: Callable[[list[T]], list[R]],
        max_batch: int,
        wait_s: float = 0.0,
        target: Callable[[], int] | None = None,
    ) -> None:
        self.name = name
        self._run = run_blocking
        self._fn = fn
        self._max = max(1, max_batch)
        self._wait = max(0.0, wait_s)
        self._target = target
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._worker: asyncio.Task[None] | None = None
        self._enough: asyncio.Event | None = None
        self.batches = 0
        self.items = 0
        self.busy_s = 0.0

    @property
    def depth(self) -> int:
        return len(self._queue)

    def _wanted(self) -> int:
        want = self._target() if self._target is not None else self._max
        return max(1, min(self._max, want))

    async def submit(self, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        if self._enough is not None and len(self._queue) >= self._wanted():
            self._enough.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain(), name=f"funasr-{self.name}")
        return await fut

    async def _gather(self) -> None:
        """Wait up to wait_s for the queue to reach the wanted size."""
        if self._wait <= 0 or len(self._queue) >= self._wanted():
            return
        self._enough = asyncio.Event()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._enough.wait(), self._wait)
        finally:
            self._enough = None

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            await self._gather()
            batch, self._queue = self._queue[: self._max], self._queue[self._max :]
            live = [(item, fut) for item, fut in batch if not fut.cancelled()]
            if not live:
                continue
            t0 = loop.time()
            try:
                results = await self._run(self._fn, [item for item, _ in live])
            except Exception as e:  # every caller of the batch sees the failure
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            finally:
                self.busy_s += loop.time() - t0
            self.batches += 1
            self.items += len(live)
            for (_, fut), res in zip(live, results, strict=True):  # type: ignore[arg-type]
                if not fut.done():
                    fut.set_result(res)

    def close(self) -> None:
        for _, fut in self._queue:
            fut.cancel()
        self._queue.clear()
        if self._worker is not None:
            self._worker.cancel()
