"""channels_redis's core layer with one reader for the process's own channels.

Every viewer's channel is process-local ("specific.<process>!<viewer>"): the layer reads
all of them from one Redis key and hands each message to its channels' buffers. The core
layer's receive() does that reading in whichever receiver wins a lock, and so makes two
tasks and an asyncio.wait per call: with 200 viewers of a session, each delta cost the
server 400 tasks and 200 waits before any viewer saw it. Here one reader task (per event
loop) reads for everyone and receive() only awaits its own buffer.

What stays the layer's: sending, groups, capacity, expiry, the named channels the
engine workers share (read by receive_single as before). A failed read (Redis away)
reaches every receiver waiting, as it did when one of them was the reader.
"""

from __future__ import annotations

import asyncio

from channels_redis.core import RedisChannelLayer


class _ReadFailed:
    """Put in every buffer when the reader's read failed: receive() raises it."""

    def __init__(self, exc: BaseException):
        self.exc = exc


class ReaderRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reader: asyncio.Task | None = None

    async def receive(self, channel):
        if "!" not in channel:
            return await super().receive(channel)  # (a named channel: the engine's)
        assert self.require_valid_channel_name(channel)
        buffer = self.receive_buffer[channel]
        self._read_for(self.non_local_name(channel))
        try:
            item = await buffer.get()
        finally:
            if buffer.empty() and self.receive_buffer.get(channel) is buffer:
                del self.receive_buffer[channel]  # (a viewer gone keeps nothing here)
        if isinstance(item, _ReadFailed):
            raise item.exc
        return item

    def _read_for(self, real_channel: str) -> None:
        loop = asyncio.get_running_loop()
        reader = self._reader
        if reader is None or reader.done() or reader.get_loop() is not loop:
            self._reader = loop.create_task(self._read(real_channel))

    async def _read(self, real_channel: str) -> None:
        me = asyncio.current_task()
        try:
            while not me.cancelling():  # (a cancel redis-py swallowed still ends this)
                target, message = await self.receive_single(real_channel)
                for chan in target if isinstance(target, list) else (target,):
                    self.receive_buffer[chan].put_nowait(message)
        except Exception as exc:  # (a cancel is no Exception: it ends the reader as it is)
            failed = _ReadFailed(exc)
            for buffer in list(self.receive_buffer.values()):
                buffer.put_nowait(failed)
