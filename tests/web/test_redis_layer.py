"""The Redis channel layer's one reader for a process's channels (ptviz/redis_layer.py),
on the real Redis at 127.0.0.1:6379 under a prefix of this test's own."""

import asyncio
import uuid

import pytest
from webhelpers import arun

from ptviz import layers
from ptviz.localservices import REDIS_URL, flush_redis_prefix, free_port, redis_up
from ptviz.redis_layer import ReaderRedisChannelLayer

pytestmark = pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")


def new_layer(url: str = REDIS_URL) -> tuple[ReaderRedisChannelLayer, str]:
    prefix = f"ptviz-test-layer-{uuid.uuid4().hex[:8]}:"
    config = layers.redis_layers(url, prefix)["default"]
    assert config["BACKEND"] == "ptviz.redis_layer.ReaderRedisChannelLayer"
    return ReaderRedisChannelLayer(**config["CONFIG"]), prefix


def test_every_viewer_channel_of_a_process_gets_each_group_message_once_in_order():
    layer, prefix = new_layer()

    async def body():
        channels = [await layer.new_channel() for _ in range(50)]
        for ch in channels:
            await layer.group_add("session", ch)
        for n in range(3):
            await layer.group_send("session", {"type": "ptviz.out", "n": n})
        for ch in channels:
            got = [(await asyncio.wait_for(layer.receive(ch), 5))["n"] for _ in range(3)]
            assert got == [0, 1, 2]
        assert not layer.receive_buffer  # (every buffer emptied is dropped)
        await layer.close_pools()

    try:
        arun(body())
    finally:
        flush_redis_prefix(prefix)


def test_a_message_to_one_channel_reaches_that_channel_alone():
    layer, prefix = new_layer()

    async def body():
        a, b = await layer.new_channel(), await layer.new_channel()
        waiting_b = asyncio.ensure_future(layer.receive(b))
        await layer.send(a, {"type": "ptviz.out", "to": "a"})
        assert (await asyncio.wait_for(layer.receive(a), 5))["to"] == "a"
        await asyncio.sleep(0.1)
        assert not waiting_b.done()
        waiting_b.cancel()
        await asyncio.gather(waiting_b, return_exceptions=True)
        assert b not in layer.receive_buffer  # a viewer gone keeps no buffer
        await layer.close_pools()

    try:
        arun(body())
    finally:
        flush_redis_prefix(prefix)


def test_a_read_that_fails_reaches_every_waiting_viewer_and_the_next_receive_reads_again():
    """Redis away: every viewer waiting hears of it (its consumer closes, the page
    reconnects), as when one of them was the reader; a later receive starts a new reader."""
    layer, prefix = new_layer(f"redis://127.0.0.1:{free_port()}/0")  # (nothing listens)

    async def body():
        channels = [await layer.new_channel() for _ in range(3)]
        results = await asyncio.wait_for(
            asyncio.gather(*[layer.receive(ch) for ch in channels], return_exceptions=True), 30
        )
        assert all(isinstance(r, Exception) for r in results), results
        first = layer._reader
        with pytest.raises(Exception):  # noqa: B017 (whatever redis-py raises for a refusal)
            await asyncio.wait_for(layer.receive(channels[0]), 30)
        assert layer._reader is not first
        await layer.close_pools()

    arun(body())
