"""The voice store on a real nats-server with JetStream: every client sees a voice at once."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess

import nats
import pytest

from bus.subjects import Subjects
from bus.voices import VoiceStore, VoiceStoreError, check_name
from funspeech.procs import nats_server_binary
from tests.conftest import free_port, wait_port

WAV = b"RIFF" + bytes(100)


async def test_put_list_get_delete_across_clients(own_nats: str) -> None:
    a, b = await nats.connect(own_nats), await nats.connect(own_nats)
    try:
        store_a = await VoiceStore.open(a, Subjects())
        store_b = await VoiceStore.open(b, Subjects())
        changed: list[str] = []
        seen = asyncio.Event()

        def on_change(name: str) -> None:
            changed.append(name)
            seen.set()

        watcher = await store_b.watch(on_change)
        record = await store_a.put(
            "张三 voice", WAV, text="你好。", sample_rate=16000, duration_ms=3000, language="zh"
        )
        await asyncio.wait_for(seen.wait(), 5)
        assert changed == ["张三 voice"]
        got = await store_b.get("张三 voice")
        assert got == record and await store_b.audio(got) == WAV
        assert [r.name for r in await store_b.list()] == ["张三 voice"]
        assert got.desc().kind == "clone"

        seen.clear()
        assert await store_b.delete("张三 voice")
        await asyncio.wait_for(seen.wait(), 5)
        assert await store_a.get("张三 voice") is None and await store_a.list() == []
        assert not await store_a.delete("张三 voice")
        watcher.cancel()
    finally:
        await a.close()
        await b.close()


async def test_replacing_a_voice_keeps_one_audio_object(own_nats: str) -> None:
    nc = await nats.connect(own_nats)
    try:
        store = await VoiceStore.open(nc, Subjects("blue"))
        await store.put("v1", WAV, text="a", sample_rate=16000, duration_ms=2000)
        await store.put("v1", WAV + b"x", text="b", sample_rate=16000, duration_ms=2000)
        got = await store.get("v1")
        assert got is not None and got.text == "b" and await store.audio(got) == WAV + b"x"
        objects = await (await nc.jetstream().object_store("blue_fs_voice_audio")).list(
            ignore_deletes=True
        )
        assert len(objects) == 1
    finally:
        await nc.close()


@pytest.mark.parametrize("name", ["", " ", "a/b", "x" * 65, ".hidden", "semi;colon"])
def test_bad_names(name: str) -> None:
    with pytest.raises(ValueError):
        check_name(name)


async def test_without_jetstream_the_error_names_the_fix() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        nats_server_binary(),
        *("-a", "127.0.0.1", "-p", str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await asyncio.to_thread(wait_port, port)
        nc = await nats.connect(f"nats://127.0.0.1:{port}")
        try:
            with pytest.raises(VoiceStoreError) as err:
                await VoiceStore.open(nc, Subjects())
            assert "JetStream" in str(err.value) and "-js" in str(err.value)
        finally:
            with contextlib.suppress(Exception):
                await nc.close()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


async def test_replicas_on_a_single_server(own_nats: str, caplog: pytest.LogCaptureFixture) -> None:
    """JETSTREAM_REPLICAS=3 against a server that is not clustered: stores made with one copy
    keep working as they are (a warning names the setting); new ones fail with the fix."""
    nc = await nats.connect(own_nats)
    try:
        await VoiceStore.open(nc, Subjects(), replicas=1)
        with caplog.at_level("WARNING", logger="funspeech.bus"):
            store = await VoiceStore.open(nc, Subjects(), replicas=3)
        assert "JETSTREAM_REPLICAS" in caplog.text and "non-clustered" in caplog.text
        await store.put("keeps", WAV, text="hi", sample_rate=16000, duration_ms=1000, language="en")
        assert [r.name for r in await store.list()] == ["keeps"]
        info = await nc.jetstream().stream_info(f"KV_{Subjects().bucket('voices')}")
        assert info.config.num_replicas == 1
        with pytest.raises(VoiceStoreError) as err:
            await VoiceStore.open(nc, Subjects("fresh"), replicas=3)
        assert "JETSTREAM_REPLICAS=1" in str(err.value), err.value
    finally:
        await nc.close()
