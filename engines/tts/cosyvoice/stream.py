"""A blocking generator run in an executor thread, consumed on the event loop.

Each item crosses to the loop through an asyncio queue as soon as it is made, so the consumer
gets the first audio chunk while the thread is still working on the next. When the consumer stops
(`stop()`), the thread ends at its next item and closes the generator. A thread that makes no item
for `timeout` seconds is given up on: the consumer gets an error and `on_finish` runs then (upstream
CosyVoice spins forever when its LLM thread dies, so waiting for that thread could be forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import Any

_END = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class ThreadStream:
    def __init__(
        self,
        executor: Executor,
        produce: Callable[[], Iterator[Any]],
        on_finish: Callable[[], None],
        timeout: float,
    ) -> None:
        self._executor = executor
        self._produce = produce
        self._on_finish = on_finish  # called once on the loop: thread done or given up on
        self._finished = False
        self._timeout = timeout
        self._stop = threading.Event()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Future[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._done = self._loop.run_in_executor(self._executor, self._pump)
        self._done.add_done_callback(lambda _f: self._finish())

    def stop(self) -> None:
        self._stop.set()

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            self._on_finish()

    def _post(self, item: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _pump(self) -> None:
        try:
            gen = self._produce()
            try:
                for item in gen:
                    self._post(item)
                    if self._stop.is_set():
                        break
            finally:
                close = getattr(gen, "close", None)
                if close is not None:
                    close()
        except BaseException as e:  # handed to the consumer
            self._post(_Failure(e))
        finally:
            self._post(_END)

    def __aiter__(self) -> ThreadStream:
        return self

    async def __anext__(self) -> Any:
        try:
            item = await asyncio.wait_for(self._queue.get(), self._timeout)
        except TimeoutError:
            self.stop()
            self._finish()
            raise RuntimeError(f"no audio from the model for {self._timeout:g} s") from None
        if item is _END:
            self._queue.put_nowait(_END)  # stays ended
            if self._done is not None:
                await self._done  # the thread is about to return: on_finish has run after this
            raise StopAsyncIteration
        if isinstance(item, _Failure):
            raise item.exc
        return item
