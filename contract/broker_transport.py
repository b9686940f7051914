"""kombu's Redis channels with the wake-up token of ``contract.broker``: Celery's ``broker_transport``.

Apart from ``contract.broker`` so that what only reads or writes the wire format (a producer
submitting to Redis in one script) does not import kombu: its serialization registry alone (YAML
included) was a seventh of ``assetq submit``'s start-up.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps

from contract.broker import WAKE_TOKENS_MAX
from contract.keys import wake_key


class WakeOnPut:
    """Publishing a wake-up token with every message. Mixed into kombu's plain and Sentinel channels."""

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        chan: Any = self
        pri = chan._get_message_priority(message, reverse=False)
        list_key = chan._q_for_pri(queue, pri)
        body = dumps(message)
        commands: list[tuple[str, tuple[Any, ...]]] = [
            ("lpush", (list_key, body)),
            ("lpush", (wake_key(queue), 1)),
            ("ltrim", (wake_key(queue), 0, WAKE_TOKENS_MAX - 1)),
        ]
        if chan._expires and queue in chan._expires:
            commands += [("pexpire", (chan._q_for_pri(queue, p), chan._expires[queue])) for p in chan.priority_steps]
        with chan.conn_or_acquire() as client, client.pipeline(transaction=True) as pipe:
            for name, args in commands:
                getattr(pipe, name)(*args)
            pipe.execute()


class Channel(WakeOnPut, kombu_redis.Channel):
    """kombu's Redis channel, publishing a wake-up token with every message."""


class SentinelChannel(WakeOnPut, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel (it finds the master through the sentinels), with the wake-up tokens."""


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
