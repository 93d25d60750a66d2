"""The launcher's process supervisor: starts children in their own sessions, forwards their
output, restarts one that dies (at once, then with a doubling delay while it keeps failing),
declares a crash loop when a child fails too often in a row, and stops children in groups."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from funspeech.procs import Tail, die_with_parent, exit_reason

log = logging.getLogger("funspeech")
PUMP_GRACE_S = 1.0  # output still in the pipe after a child exits
LINE_LIMIT = 1 << 20


@dataclass
class Policy:
    restart_limit: int = 5  # restarts in a row of a child that does not come up and stay up
    backoff: float = 0.5  # before the second restart in a row; doubles after that
    backoff_max: float = 10.0
    stable_s: float = 10.0  # up and ready this long: the child has recovered


@dataclass
class Child:
    name: str  # "nats-server", "engine cpu", "bridge 1"
    argv: list[str]
    ready_line: str = ""  # a line of its output that means it is ready ("" = told by mark_ready)
    env: dict[str, str] | None = None  # on top of ours
    proc: asyncio.subprocess.Process | None = None
    tail: Tail = field(default_factory=Tail)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float = 0.0
    ready_at: float | None = None
    died_at: float | None = None
    failures: int = 0  # exits in a row without staying up
    _pump: asyncio.Task[None] | None = None
    _watch: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


class Supervisor:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.children: list[Child] = []
        self.stopping = False
        self.crash_loop: str | None = None  # why it gave up
        self.failed = asyncio.Event()

    async def start(self, child: Child) -> Child:
        self.children.append(child)
        await self._spawn(child)
        child._watch = asyncio.create_task(self._supervise(child))
        return child

    def mark_ready(self, child: Child) -> None:
        if child.ready.is_set() or not child.alive():
            return
        now = time.monotonic()
        child.ready_at = now
        child.ready.set()
        if child.died_at is not None:
            log.info("%s is back (pid %d), %.1f s after it died", child.name, child.pid,
                     now - child.died_at)  # fmt: skip
            child.died_at = None

    async def _spawn(self, child: Child) -> None:
        child.ready.clear()
        child.ready_at = None
        # own session: a terminal's Ctrl-C reaches only the launcher, which stops them in order;
        # the parent-death signal ends them should the launcher be killed outright
        child.proc = await asyncio.create_subprocess_exec(
            *child.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
            limit=LINE_LIMIT,
            env={**os.environ, **child.env} if child.env else None,
        )
        child.started_at = time.monotonic()
        log.debug("started %s (pid %d): %s", child.name, child.pid, " ".join(child.argv))
        child._pump = asyncio.create_task(self._forward(child, child.proc))

    async def _forward(self, child: Child, proc: asyncio.subprocess.Process) -> None:
        """Copy the child's output to ours, keep its tail, watch for its ready line."""
        assert proc.stdout is not None
        out = sys.stderr.buffer
        while True:
            try:
                line = await proc.stdout.readline()
            except ValueError:  # a line over LINE_LIMIT: take what is there
                line = await proc.stdout.read(LINE_LIMIT)
            if not line:
                return
            with contextlib.suppress(OSError):
                out.write(line)
                out.flush()
            text = line.decode(errors="replace")
            child.tail.add(text)
            if child.ready_line and child.ready_line in text and proc is child.proc:
                self.mark_ready(child)

    async def _supervise(self, child: Child) -> None:
        while True:
            assert child.proc is not None and child._pump is not None
            code = await child.proc.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(child._pump), PUMP_GRACE_S)
            if self.stopping:
                return
            now = time.monotonic()
            child.died_at = now
            stayed = child.ready_at is not None and now - child.ready_at >= self.policy.stable_s
            child.failures = 1 if stayed else child.failures + 1
            why = exit_reason(code)
            if child.failures > self.policy.restart_limit:
                self.crash_loop = (
                    f"{child.name} {why}; it failed {child.failures} times in a row without "
                    f"staying up {self.policy.stable_s:g} s. Its last lines:\n{child.tail.text()}"
                )
                log.error("crash loop: %s", self.crash_loop)
                self.failed.set()
                return
            delay = self._delay(child.failures)
            log.warning("%s (pid %d) %s; restarting it in %.1f s (restart %d in a row)",
                        child.name, child.pid, why, delay, child.failures)  # fmt: skip
            await asyncio.sleep(delay)
            await self._spawn(child)

    def _delay(self, failures: int) -> float:
        if failures <= 1:
            return 0.0
        return min(self.policy.backoff_max, self.policy.backoff * 2 ** (failures - 2))

    async def stop(self, groups: Sequence[tuple[Sequence[Child], float]]) -> None:
        """Stop without restarting: each group gets SIGTERM together and `timeout` s to exit
        (then SIGKILL), one group after the other."""
        self.stopping = True
        for child in self.children:
            if child._watch is not None and not child._watch.done():
                child._watch.cancel()
        for children, timeout in groups:
            await asyncio.gather(*(self._stop(c, timeout) for c in children))
        for child in self.children:
            if child._pump is not None:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(child._pump, PUMP_GRACE_S)

    async def _stop(self, child: Child, timeout: float) -> None:
        proc = child.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            log.warning("%s did not stop in %.0f s; killing it", child.name, timeout)
            self.kill(child)
            await proc.wait()

    def kill(self, child: Child) -> None:
        if child.alive():
            assert child.proc is not None
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()

    def kill_all(self) -> None:
        self.stopping = True
        for child in self.children:
            self.kill(child)
