"""CHANNEL_LAYERS for both deployments (used by settings.py and the tests).

Deliberate limits (DESIGN.md, "Pitfalls"): layers are at-most-once and drop messages
over capacity silently, so every delta is numbered and a gap resyncs from a snapshot.

- capacity 1000: a viewer's channel may hold a burst of delta batches (the engine
  coalesces a fast run to about 20 batches per second, the consumer collapses more than
  200 queued batches into one snapshot), and the shared engine channel holds commands of
  every viewer; past that, dropping is correct: the gap triggers a resync.
- expiry 30 s: a delta older than that is worth less than the snapshot a resync brings.
- group_expiry 7 days: the default 24 h would silently stop a long debugging session's
  deltas; consumers also re-join their group with every viewer heartbeat (a Redis restart
  without persistence forgets the groups), and the engine removes viewers it stopped
  hearing from (their server died).
- max_connections 1000: redis-py's asyncio pool raises at once when every connection is in
  use (default 100), and a burst of a few hundred viewers reconnecting at once (after a
  server or Redis restart) each use one for group_add and a send.
"""

from __future__ import annotations

CAPACITY = 1000
EXPIRY = 30
GROUP_EXPIRY = 7 * 24 * 3600
# channels_redis waits for messages with BZPOPMIN for 5 s; redis-py >= 6 gives every
# connection a 5 s socket timeout by default, so under load the read of an empty answer
# times out and kills the consumer. Longer than the blocking pop, shorter than forever.
REDIS_SOCKET_TIMEOUT = 20
REDIS_MAX_CONNECTIONS = 1000


def redis_layers(url: str, prefix: str) -> dict:
    # The core RedisChannelLayer, not RedisPubSubChannelLayer: it has capacity and expiry,
    # and it load-balances a named channel ("ptviz-engine") over the engine workers that
    # listen on it, where pub/sub would deliver every command to every worker. Its
    # subclass reads the process's own channels in one task (ptviz/redis_layer.py).
    return {
        "default": {
            "BACKEND": "ptviz.redis_layer.ReaderRedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": url,
                        "socket_timeout": REDIS_SOCKET_TIMEOUT,
                        "socket_connect_timeout": 5,
                        "max_connections": REDIS_MAX_CONNECTIONS,
                        "health_check_interval": 10,  # a stale connection after a restart
                    }
                ],
                "prefix": prefix,
                "capacity": CAPACITY,
                "expiry": EXPIRY,
                "group_expiry": GROUP_EXPIRY,
            },
        }
    }


def inmemory_layers() -> dict:
    return {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": CAPACITY, "expiry": EXPIRY, "group_expiry": GROUP_EXPIRY},
        }
    }


async def deliver(layer, kind: str, target: str, payload: dict, who: str) -> None:
    """Send one outbound engine message (group_send for "group", group_discard of the
    viewer `target` for "discard", else send). A full channel drops it: the viewer sees
    the batch gap and resyncs (group_send itself never raises, DESIGN.md pitfalls). A
    layer outage is logged once per message, without a traceback (it repeats)."""
    import logging

    from channels.exceptions import ChannelFull

    try:
        if kind == "group":
            await layer.group_send(target, payload)
        elif kind == "discard":
            await layer.group_discard(payload["group"], target)
        else:
            await layer.send(target, payload)
    except ChannelFull:
        logging.getLogger("ptviz.engine").info(
            "%s: channel %s is full; message dropped", who, target
        )
    except Exception as exc:
        if isinstance(exc, OSError | TimeoutError) or type(exc).__module__.startswith("redis"):
            logging.getLogger("ptviz.engine").warning(
                "%s: delivering to %s failed: %r", who, target, exc
            )
        else:
            logging.getLogger("ptviz.engine").exception("%s: delivering to %s failed", who, target)
