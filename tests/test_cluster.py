"""FunSpeech across hosts: a 3-node NATS cluster with JetStream (R3), engines and bridges on
different hosts, and the faults such a cluster meets. Hosts are network namespaces on a Linux
bridge (tests/netns.py, tests/cluster.py); the test process itself talks to them from a client
host, as a client on another machine would. Figures are printed (pytest -s) for
docs/deployment.md."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from nats.errors import Error as NatsError

from bus.client import Bus
from bus.jobs import JobStore
from bus.schemas import EngineInfo, TtsParams, decode
from bus.subjects import Subjects
from bus.voices import VoiceStore
from engines.tts.text import split_sentences
from tests.cluster import BridgeInHost, Deployment, logs, routes, run_in
from tests.harness import EngineProcess, nls_frame, nls_order_errors
from tests.netns import Host, Network, unavailable
from tests.nls_client import read_pcm

pytestmark = pytest.mark.timeout(600)
REASON = unavailable()
CHUNK = 3200  # 100 ms of 16 kHz s16le
ASR_ONLY = {"HEALTH_TASKS": "asr"}  # these bridges front ASR engines only: ready with those
TEXT = aiohttp.WSMsgType.TEXT


@pytest.fixture(scope="module")
def net() -> Iterator[Network]:
    if REASON:
        pytest.skip(f"hosts are simulated with network namespaces: {REASON}")
    with Network() as network:
        for name in ("h1", "h2", "h3", "h4", "client"):
            network.add_host(name)
        yield network


@pytest.fixture(scope="module")
def cluster(net: Network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The NATS cluster on h1-h3 (h4 has no node); engines and bridges come per test."""
    hosts = [net.hosts[h] for h in ("h1", "h2", "h3")]
    dep = Deployment(net, hosts, net.hosts["client"], tmp_path_factory.mktemp("cluster"))
    try:
        yield dep.start()
    finally:
        dep.close()


@pytest.fixture
def dep(cluster: Deployment) -> Iterator[Deployment]:
    """The cluster with every node running after the test, and the test's processes gone."""
    first = len(cluster.procs)
    yield cluster
    for proc in reversed(cluster.procs[first:]):
        if proc.alive():
            proc.stop(10)
    del cluster.procs[first:]
    stopped = [n for n in cluster.nodes.values() if not n.alive()]
    for node in stopped:
        node.start()
    if stopped:
        cluster.wait_jetstream(60, stopped)
    for host in cluster.net.hosts.values():
        cluster.net.restore(host)


# ---------------------------------------------------------------- helpers (in the client host)


def engine_id(proc: EngineProcess) -> str:
    return f"-{proc.pid}"  # engine ids end with the engine's pid (engines/server.py)


def start_engines(dep: Deployment, where: list[tuple[Host, dict[str, str]]]) -> list[EngineProcess]:
    return [dep.engine(host, **env).start() for host, env in where]


async def wait_engines(dep: Deployment, procs: list[EngineProcess], timeout: float = 120) -> None:
    bus = await Bus.connect(dep.urls(dep.client), "test-client")
    try:
        ids = [engine_id(p) for p in procs]
        async with asyncio.timeout(timeout):
            while not all(any(e.id.endswith(i) for e in bus.directory.engines()) for i in ids):
                for p in procs:
                    p.check()
                await bus.directory.wait_change(0.2)
    finally:
        await bus.close()


async def engines_seen(http: aiohttp.ClientSession, bridge: BridgeInHost) -> dict[str, Any]:
    """engine id -> its state, as the bridge's /stream/v1/asr/health lists them."""
    async with http.get(f"{bridge.url}/stream/v1/asr/health") as r:
        body = await r.json()
    return {e["id"]: e for e in body["engines"]}


def start_frame(task_id: str) -> str:
    return nls_frame("StartTranscription", task_id, {"format": "pcm", "sample_rate": 16000})


class Session:
    """One NLS SpeechTranscriber session on a bridge, frames kept in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, task_id: str) -> None:
        self.ws = ws
        self.task_id = task_id
        self.names: list[str] = []
        self.headers: list[dict[str, Any]] = []
        self.payloads: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, bridge: BridgeInHost) -> Session:
        ws = await http.ws_connect(f"{bridge.ws_url}/ws/v1", timeout=aiohttp.ClientWSTimeout(5))
        session = cls(ws, uuid.uuid4().hex)
        await ws.send_str(start_frame(session.task_id))
        await session.next(10)
        return session

    @property
    def started(self) -> bool:
        return bool(self.names) and self.names[0] == "TranscriptionStarted"

    @property
    def failure(self) -> dict[str, Any] | None:
        return next((h for h in self.headers if h["name"] == "TaskFailed"), None)

    async def next(self, timeout: float) -> str:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type != TEXT:
            raise ConnectionError(f"connection ended ({msg.type.name}) after {self.names}")
        frame = json.loads(msg.data)
        self.names.append(frame["header"]["name"])
        self.headers.append(frame["header"])
        self.payloads.append(frame.get("payload") or {})
        return self.names[-1]

    async def stream_until_failed(
        self, timeout: float, give_up: asyncio.Event | None = None
    ) -> float | None:
        """Send silence in real time until TaskFailed comes: seconds it took (None when
        `give_up` was set first)."""
        began = time.monotonic()
        async with asyncio.timeout(timeout):
            while give_up is None or not give_up.is_set():
                with contextlib.suppress(ConnectionError):
                    await self.ws.send_bytes(bytes(CHUNK))
                with contextlib.suppress(TimeoutError):
                    if await self.next(0.1) == "TaskFailed":
                        if give_up is not None:
                            give_up.set()
                        return time.monotonic() - began
        return None

    async def transcribe(self, pcm: bytes, timeout: float = 120) -> str:
        """Stream a clip (fast), stop, read to the end; the recognized text."""
        for start in range(0, len(pcm), CHUNK):
            await self.ws.send_bytes(pcm[start : start + CHUNK])
        await self.ws.send_str(nls_frame("StopTranscription", self.task_id))
        async with asyncio.timeout(timeout):
            while self.names[-1] not in ("TranscriptionCompleted", "TaskFailed"):
                await self.next(timeout)
        assert not nls_order_errors(self.names), self.names
        assert self.names[-1] == "TranscriptionCompleted", self.headers[-1]
        ends = [p["result"] for n, p in zip(self.names, self.payloads, strict=True)
                if n == "SentenceEnd"]  # fmt: skip
        return " ".join(ends)

    async def close(self) -> None:
        await self.ws.close()


@contextlib.asynccontextmanager
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        yield http


def words(text: str) -> set[str]:
    return {w.strip(".,").lower() for w in text.split()}


FOX = read_pcm("en_fox.wav")


# ---------------------------------------------------------------- topology and capacity


def test_sessions_cross_hosts_and_a_new_engine_adds_capacity_everywhere(
    dep: Deployment,
) -> None:
    """Bridges on h1 and h2, an engine on h3: a session through either bridge reaches it.
    An engine started on h4 (no NATS node there, no bridge restarted or reconfigured) is in
    every bridge's view within a second of its first heartbeat, and takes the session the full
    engine on h3 cannot."""
    h1, h2, h3, h4 = (dep.net.hosts[h] for h in ("h1", "h2", "h3", "h4"))
    (e3,) = start_engines(dep, [(h3, {"ASR_MAX_SESSIONS": "1"})])
    bridges = [dep.bridge(h1, **ASR_ONLY).start(), dep.bridge(h2, **ASR_ONLY).start()]
    run_in(dep.client, lambda: wait_engines(dep, [e3]))

    async def scenario() -> dict[str, float]:
        async with client() as http:
            for bridge in bridges:  # through either bridge, to the engine on h3
                session = await Session.open(http, bridge)
                assert session.started, session.headers
                assert words(await session.transcribe(FOX)) >= {"quick", "fox", "lazy", "dog"}
                await session.close()
            held = await Session.open(http, bridges[0])  # h3 is full now
            for bridge in bridges * 3:  # "full" at once, also while interest settles
                began = time.monotonic()
                refused = await Session.open(http, bridge)
                assert refused.failure and refused.failure["status"] == 40000005, refused.headers
                assert time.monotonic() - began < 1.5, "a full cluster answers within a second"
                await refused.close()

            # a new engine on a new host; when does each bridge see it?
            bus = await Bus.connect(dep.urls(dep.client), "test-watch")
            e4 = dep.engine(h4, ASR_MAX_SESSIONS="1")
            first_beat: dict[str, float] = {}

            async def beat(msg: Any) -> None:
                if decode(EngineInfo, msg.data).pid == e4.pid:
                    first_beat.setdefault("t", time.monotonic())

            await bus.nc.subscribe(bus.subjects.heartbeat, cb=beat)
            await asyncio.to_thread(e4.start)
            seen: dict[str, float] = {}
            try:
                async with asyncio.timeout(120):
                    while len(seen) < len(bridges):
                        for bridge in bridges:
                            engines = await engines_seen(http, bridge)
                            if any(i.endswith(engine_id(e4)) for i in engines):
                                seen.setdefault(bridge.name, time.monotonic())
                        e4.check()
                        await asyncio.sleep(0.02)
            finally:
                await bus.close()
            lag = {name: t - first_beat["t"] for name, t in seen.items()}
            assert all(v < 1.0 for v in lag.values()), lag
            for bridge in bridges:
                capacity = sum(e["capacity"] for e in (await engines_seen(http, bridge)).values())
                assert capacity == 2, (bridge.name, capacity)
            # h3 still full: the session through the other bridge goes to h4
            second = await Session.open(http, bridges[1])
            assert second.started, second.headers
            assert words(await second.transcribe(FOX)) >= {"quick", "fox"}
            await held.close()
            return lag

    try:
        lag = run_in(dep.client, scenario)
    except BaseException:
        print(logs([*dep.procs, *dep.nodes.values()]))
        raise
    print(f"\nFIGURE new engine -> in every bridge's directory: {max(lag.values()) * 1000:.0f} ms")


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize("victim", ["engine", "bridge"])
def test_killed_nats_node(dep: Deployment, victim: str) -> None:
    """kill -9 the NATS node the engine (or the bridge) is connected to. The session on the
    broken path ends with TaskFailed; the process reconnects to another node and new sessions
    through the bridge are served within 5 s of the kill."""
    h1, h2 = dep.net.hosts["h1"], dep.net.hosts["h2"]
    (engine,) = start_engines(dep, [(h2, {})])
    bridge = dep.bridge(h1, **ASR_ONLY).start()
    run_in(dep.client, lambda: wait_engines(dep, [engine]))
    node = dep.node_of(h2 if victim == "engine" else h1)

    async def scenario() -> tuple[float, float]:
        async with client() as http:
            session = await Session.open(http, bridge)
            assert session.started, session.headers
            await session.ws.send_bytes(FOX[: 10 * CHUNK])
            node.kill()
            killed = time.monotonic()
            failed_after = await session.stream_until_failed(10)
            assert session.failure and session.failure["status"] == 50000000, session.headers
            async with asyncio.timeout(10):
                while True:
                    attempt = await Session.open(http, bridge)
                    if attempt.started:
                        break
                    await attempt.close()
                    await asyncio.sleep(0.1)
            served_after = time.monotonic() - killed
            assert words(await attempt.transcribe(FOX)) >= {"quick", "fox"}
            print(f"\n{victim}: {session.failure['status_text']}")
            return failed_after, served_after

    try:
        failed_after, served_after = run_in(dep.client, scenario)
    except BaseException:
        print(logs([*dep.procs, *dep.nodes.values()]))
        raise
    assert served_after < 5.0, served_after
    print(
        f"\nFIGURE node of the {victim} killed: session TaskFailed after {failed_after:.2f} s, "
        f"new session served {served_after:.2f} s after the kill"
    )


@pytest.mark.parametrize("long_cut", [False, True], ids=["short-cut", "long-cut"])
def test_host_cut_off_and_back(dep: Deployment, long_cut: bool) -> None:
    """Pull h3's cable: its engine leaves both bridges' directories within a few seconds, its
    session ends with TaskFailed; sessions go on on the engine of h1. Put the cable back: the
    engine rejoins every bridge, whether the cut was short (the cluster routes to h3's node
    survived it) or long enough for the other nodes to drop those routes (nats.conf pings)."""
    h1, h2, h3 = (dep.net.hosts[h] for h in ("h1", "h2", "h3"))
    e3, e1 = start_engines(dep, [(h3, {"ASR_MAX_SESSIONS": "1"}), (h1, {"ASR_MAX_SESSIONS": "1"})])
    bridges = [dep.bridge(h1, **ASR_ONLY).start(), dep.bridge(h2, **ASR_ONLY).start()]
    run_in(dep.client, lambda: wait_engines(dep, [e3, e1]))

    async def until(http: aiohttp.ClientSession, present: bool, since: float) -> float:
        """Seconds from `since` until every bridge lists e3 (present) or none does."""
        async with asyncio.timeout(60):
            while True:
                views = [await engines_seen(http, b) for b in bridges]
                listed = [any(i.endswith(engine_id(e3)) for i in v) for v in views]
                if all(x == present for x in listed):
                    return time.monotonic() - since
                await asyncio.sleep(0.05)

    async def scenario() -> tuple[float, float, float]:
        async with client() as http:
            # one session per engine; the one on h3 is the one that will fail
            first = await Session.open(http, bridges[0])
            second = await Session.open(http, bridges[1])
            assert first.started and second.started, (first.headers, second.headers)
            async with asyncio.timeout(5):  # one on each engine (capacity 1 each)
                while any(
                    e["active"] != 1 for e in (await engines_seen(http, bridges[0])).values()
                ):
                    await asyncio.sleep(0.1)
            dep.net.cut(h3)
            cut = time.monotonic()
            # the session on h3 fails (which of the two it is, the failure says), and the
            # engine leaves the directories meanwhile
            gone = asyncio.create_task(until(http, False, cut))
            one = asyncio.Event()
            results = await asyncio.gather(
                first.stream_until_failed(15, one), second.stream_until_failed(15, one)
            )
            assert sum(r is not None for r in results) == 1, (results, first.names, second.names)
            failed_after = next(r for r in results if r is not None)
            on_h3 = first if results[0] is not None else second
            assert on_h3.failure and on_h3.failure["status"] == 50000000, on_h3.headers
            gone_after = await gone
            survivor = second if on_h3 is first else first
            assert not survivor.failure, survivor.headers
            assert words(await survivor.transcribe(FOX)) >= {"quick", "fox"}
            if long_cut:  # until h1's node has given up its routes to h3's
                n3 = dep.node_of(h3).name
                async with asyncio.timeout(60):
                    while await asyncio.to_thread(routes, h1, n3):
                        await asyncio.sleep(0.5)
            dep.net.restore(h3)
            restored = time.monotonic()
            back_after = await until(http, True, restored)
            again = await Session.open(http, bridges[1])
            assert again.started, again.headers
            assert words(await again.transcribe(FOX)) >= {"quick", "fox"}
            return failed_after, gone_after, back_after

    try:
        failed_after, gone_after, back_after = run_in(dep.client, scenario)
    except BaseException:
        print(logs([*dep.procs, *dep.nodes.values()]))
        raise
    assert gone_after < 5.0, gone_after
    print(
        f"\nFIGURE host cut ({'long' if long_cut else 'short'}): session TaskFailed after "
        f"{failed_after:.2f} s, engine out of every directory after {gone_after:.2f} s; "
        f"link back: rejoined after {back_after:.2f} s"
    )


def test_killed_bridge_clients_move_to_another(dep: Deployment) -> None:
    """kill -9 a bridge mid-session: its client sees the connection end (no hang), checks the
    bridges' /health as a load balancer does and goes on through the other bridge. Nothing
    durable was in the bridge: the engines, the JetStream state and the other bridge carry
    on."""
    h1, h2, h3 = (dep.net.hosts[h] for h in ("h1", "h2", "h3"))
    (engine,) = start_engines(dep, [(h3, {})])
    bridges = [dep.bridge(h1, **ASR_ONLY).start(), dep.bridge(h2, **ASR_ONLY).start()]
    run_in(dep.client, lambda: wait_engines(dep, [engine]))

    async def healthy(http: aiohttp.ClientSession) -> list[BridgeInHost]:
        up = []
        for bridge in bridges:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"{bridge.url}/health", timeout=aiohttp.ClientTimeout(1)) as r:
                    if r.status == 200:
                        up.append(bridge)
        return up

    async def scenario() -> float:
        async with client() as http:
            session = await Session.open(http, bridges[0])
            await session.ws.send_bytes(FOX[: 5 * CHUNK])
            bridges[0].kill()
            killed = time.monotonic()
            with pytest.raises(ConnectionError):
                async with asyncio.timeout(5):
                    while True:
                        await session.next(5)
            assert await healthy(http) == [bridges[1]]
            retry = await Session.open(http, bridges[1])
            assert retry.started, retry.headers
            assert words(await retry.transcribe(FOX)) >= {"quick", "fox"}
            return time.monotonic() - killed

    try:
        moved = run_in(dep.client, scenario)
    except BaseException:
        print(logs([*dep.procs, *dep.nodes.values()]))
        raise
    print(f"\nFIGURE bridge killed: the client finished its retry elsewhere after {moved:.2f} s")


# ---------------------------------------------------------------- JetStream leader


SENTENCES = ["今天天气很好。", "我们去公园散步吧。", "我喜欢在周末看电影。", "也喜欢听音乐。"]


def test_job_stream_leader_killed_while_jobs_run(dep: Deployment) -> None:
    """kill -9 the server that leads the job stream fs_jobs (R3) while async jobs run on TTS
    engines of two hosts: JetStream elects another leader, publishes resume, every job accepted
    before or during the election finishes, and none has a part twice in its output."""
    h2, h3 = dep.net.hosts["h2"], dep.net.hosts["h3"]
    env = {"TTS_MAX_SESSIONS": "2", "TTS_ASYNC_PART_CHARS": "50"}
    engines = [dep.engine(h, task="tts", **env).start() for h in (h2, h3)]
    run_in(dep.client, lambda: wait_engines(dep, engines, timeout=240))
    text = "".join(SENTENCES) * 2  # 8 sentences, 2 parts of 50 characters at most

    async def scenario() -> dict[str, float]:
        bus = await Bus.connect(dep.urls(dep.client), "test-jobs")
        try:
            store = await JobStore.open(bus.nc, bus.subjects, replicas=3)
            stream = bus.subjects.bucket("jobs")
            info = await store.js.stream_info(stream)
            assert info.config.num_replicas == 3, info.config
            leader = info.cluster.leader
            accepted = [(await store.submit(text, TtsParams())).task_id for _ in range(4)]
            victim = next(n for n in dep.nodes.values() if n.name == leader)
            await asyncio.to_thread(victim.kill)
            killed = time.monotonic()
            resumed = 0.0
            refused = 0
            while len(accepted) < 10:  # go on submitting through the election
                try:
                    async with asyncio.timeout(1):  # the figure's resolution
                        job = await store.submit(text, TtsParams())
                except Exception:
                    refused += 1
                    await asyncio.sleep(0.1)
                    continue
                resumed = resumed or time.monotonic() - killed
                accepted.append(job.task_id)
            async with asyncio.timeout(300):
                while True:
                    try:  # the KV's stream may still be electing ("temporarily unavailable"):
                        # a client asks again, as the bridge's 503 for it tells one to
                        jobs = [await store.get(t) for t in accepted]
                    except NatsError:
                        await asyncio.sleep(1)
                        continue
                    if all(j is not None and j.status != "RUNNING" for j in jobs):
                        break
                    await asyncio.sleep(1)
            new_leader = (await store.js.stream_info(stream)).cluster.leader
            expected = split_sentences(text)
            for job in jobs:
                assert job is not None and job.status == "SUCCESS", job
                sentences = await store.sentences(job.task_id)
                said = [s.text for s in sentences]
                assert said == expected, (job.task_id, said)  # each sentence once, in order
                ends = [s.end_ms for s in sentences]
                assert ends == sorted(ends) and abs(job.duration_ms - ends[-1]) < 1000, job
                audio = await store.audio(job.task_id)  # pcm: 16 kHz s16le, as long as said
                assert audio and abs(len(audio) / 32 - job.duration_ms) < 50, len(audio or b"")
        finally:
            await bus.close()
        assert new_leader and new_leader != leader, (leader, new_leader)
        return {"resumed": resumed, "refused": refused, "jobs": len(jobs)}

    try:
        figures = run_in(dep.client, scenario)
    except BaseException:
        print(logs([*dep.procs, *dep.nodes.values()]))
        raise
    print(
        f"\nFIGURE job stream leader killed: publishes resumed after {figures['resumed']:.1f} s "
        f"({figures['refused']:.0f} submissions refused meanwhile), {figures['jobs']:.0f} "
        "accepted jobs all done, none with a part twice"
    )


def test_replicas_follow_a_raised_setting(dep: Deployment) -> None:
    """Stores first opened with JETSTREAM_REPLICAS=1, then by processes set to 3 (the cluster
    grew): every stream and bucket gets three copies; a process still set to 1 afterwards
    leaves them at three (durability is never lowered by a stale setting)."""
    subjects = Subjects(f"r{uuid.uuid4().hex[:8]}")  # streams of this test's own
    streams = [
        subjects.bucket("jobs"),
        f"KV_{subjects.bucket('tts_jobs')}",
        f"OBJ_{subjects.bucket('tts_audio')}",
        f"KV_{subjects.bucket('voices')}",
        f"OBJ_{subjects.bucket('voice_audio')}",
    ]

    async def scenario() -> list[list[int]]:
        bus = await Bus.connect(dep.urls(dep.client), "test-replicas")
        js = bus.nc.jetstream()
        seen = []
        try:
            for replicas in (1, 3, 1):
                await JobStore.open(bus.nc, subjects, replicas=replicas)
                await VoiceStore.open(bus.nc, subjects, replicas=replicas)
                seen.append([(await js.stream_info(s)).config.num_replicas for s in streams])
        finally:
            for stream in streams:
                with contextlib.suppress(NatsError):
                    await js.delete_stream(stream)
            await bus.close()
        return seen

    assert run_in(dep.client, scenario) == [[1] * 5, [3] * 5, [3] * 5]
