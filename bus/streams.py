"""JetStream stream upkeep shared by the voice store and the job store."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from nats.errors import Error as NatsError
from nats.js import JetStreamContext

log = logging.getLogger("funspeech.bus")

UPDATE_TIMEOUT_S = 10.0  # one stream update (a replica change waits for the new peers)


async def raise_replicas(js: JetStreamContext, stream: str, replicas: int) -> None:
    """Give a stream created with fewer copies `replicas` (JETSTREAM_REPLICAS raised after the
    cluster grew). Never lowers them: a process with a stale setting must not cut durability.
    A server that cannot (not clustered, too few nodes) leaves the stream as it is, with a
    warning: the store works as before."""
    try:
        async with asyncio.timeout(UPDATE_TIMEOUT_S):
            current = (await js.stream_info(stream)).config
            have = current.num_replicas or 1
            if have >= replicas:
                return
            await js.update_stream(replace(current, num_replicas=replicas))
    except (NatsError, TimeoutError) as exc:
        log.warning(
            "JetStream stream %s keeps its replicas: raising them to %d (JETSTREAM_REPLICAS) "
            "failed: %s",
            stream,
            replicas,
            exc or exc.__class__.__name__,
        )
        return
    log.info("JetStream stream %s: replicas %d -> %d (JETSTREAM_REPLICAS)", stream, have, replicas)
