"""The broker transport's wait for a Redis that refuses writes (worker/broker.py); end to end in test_faults.py."""

from __future__ import annotations

import pytest
import redis

from config import Settings
from worker.app import celery_config
from worker.backoff import until_accepted
from worker.broker import TRANSPORT, transport_for
from worker.rabbit import TRANSPORT as RABBIT_TRANSPORT


def test_refused_writes_are_retried_until_accepted() -> None:
    refusals = [redis.exceptions.OutOfMemoryError("OOM"), redis.exceptions.ReadOnlyError("READONLY")]
    pauses: list[float] = []

    def write() -> str:
        if refusals:
            raise refusals.pop(0)
        return "written"

    assert until_accepted(write, "testing", sleep=pauses.append) == "written"
    assert len(pauses) == 2 and pauses[1] > 0  # backed off between attempts


def test_other_errors_pass_through_at_once() -> None:
    def write() -> None:
        raise redis.exceptions.ResponseError("WRONGTYPE")

    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        until_accepted(write, "testing", sleep=lambda s: pytest.fail("must not wait"))


def test_only_redis_brokers_get_the_transport() -> None:
    assert transport_for("redis://127.0.0.1:6379/0") == TRANSPORT
    assert transport_for("rediss://cache.example:6380/1") == TRANSPORT
    # RabbitMQ gets kombu's py-amqp transport, riding out a consumer timeout (worker/rabbit.py); no leases
    assert transport_for("amqp://guest@localhost//") == RABBIT_TRANSPORT
    assert transport_for("sqs://") is None
    assert celery_config(Settings(redis_url="redis://127.0.0.1:6379/3"))["broker_transport"] == TRANSPORT


def test_the_wire_constants_are_kombus() -> None:
    """``contract.broker`` states kombu's list naming instead of importing kombu: it must be kombu's."""
    from kombu.transport import redis as kombu_redis

    from contract.broker import PRIORITY_SEP, PRIORITY_STEPS

    assert kombu_redis.Channel.sep == PRIORITY_SEP
    assert list(PRIORITY_STEPS) == list(kombu_redis.Channel.priority_steps)
