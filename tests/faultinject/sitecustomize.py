"""Fault hooks for assetq's fault-injection tests, loaded only into worker processes those tests start.

A test puts this directory on the worker's PYTHONPATH; Python then imports this
module at start-up. assetq itself never imports it: production code has no
fault hooks. The hooks patch the pipeline and the Redis sink inside each pool
child (``worker_process_init``), so they act after the task has counted its
delivery, like a real crash in a decoder or a model would.

* ``ASSETQ_FAULT_POISON=<asset id>``: SIGKILL the pool child whenever it starts
  processing a chunk containing this asset (every time: a poison message).
* ``ASSETQ_FAULT_RAISE=<asset id>``: raise an unexpected error (as a broken
  model would) in every chunk containing this asset.
* ``ASSETQ_FAULT_CRASH_AFTER_WRITE=<asset id>``: SIGKILL the pool child right
  after the results of a chunk containing this asset were written, once.
* ``ASSETQ_FAULT_DELAY_S=<seconds>``: sleep this long before processing each
  chunk, giving a test a window to kill a worker mid-task.
* ``ASSETQ_FAULT_HANG=<asset id>``: hang in every chunk containing this asset
  the way code stuck in C does: deaf to the soft time limit (its signal blocked),
  so only the hard time limit ends it.
* ``ASSETQ_FAULT_KILL_AT=<moment>`` with ``ASSETQ_FAULT_KILL_NTH=<n>``: SIGKILL the
  whole worker (its process group: main process and pool children, as the
  out-of-memory killer or a lost machine would) the n-th time this process gets
  to ``<moment>``. In the main process: ``fetched`` (a message taken, not yet
  handed to the pool; on RabbitMQ: a task message delivered), ``acked``. In a pool child: ``task_started`` (delivery
  counted, pipeline not run), ``processed`` (pipeline done, nothing written),
  ``staged`` (documents chosen, no copy written), ``s3_partial`` (one S3 object
  of the chunk written), ``s3_written`` (between the S3 and the Redis write),
  ``recorded`` (results recorded, not acknowledged). Each kill is logged to
  ``assetq:fault:kills`` (a list of ``<moment> <unix time>``) first.

Each crash adds one to ``assetq:fault:crashes`` (hash, asset id -> n) first.
"""

from __future__ import annotations

import os
import time

HOOKS = (
    "ASSETQ_FAULT_POISON",
    "ASSETQ_FAULT_RAISE",
    "ASSETQ_FAULT_CRASH_AFTER_WRITE",
    "ASSETQ_FAULT_DELAY_S",
    "ASSETQ_FAULT_HANG",
    "ASSETQ_FAULT_KILL_AT",
)
CRASHES_KEY = "assetq:fault:crashes"
ONCE_KEY = "assetq:fault:once:"
KILLS_KEY = "assetq:fault:kills"
MAIN_MOMENTS = ("fetched", "acked")
CHILD_MOMENTS = ("task_started", "processed", "staged", "s3_partial", "s3_written", "recorded")
_reached: dict[str, int] = {}


def _reach(moment: str) -> None:
    """Kill the whole worker if this is the planned moment, the planned time."""
    if os.environ.get("ASSETQ_FAULT_KILL_AT") != moment:
        return
    _reached[moment] = _reached.get(moment, 0) + 1
    if _reached[moment] != int(os.environ.get("ASSETQ_FAULT_KILL_NTH") or 1):
        return
    import signal

    import redis

    redis.Redis.from_url(os.environ["ASSETQ_REDIS_URL"]).rpush(KILLS_KEY, f"{moment} {time.time()}")
    os.killpg(os.getpgid(0), signal.SIGKILL)


def _crash(asset_id: str) -> None:
    import signal

    import redis

    redis.Redis.from_url(os.environ["ASSETQ_REDIS_URL"]).hincrby(CRASHES_KEY, asset_id, 1)
    os.kill(os.getpid(), signal.SIGKILL)


def _hang(asset_id: str) -> None:
    import signal

    import redis

    redis.Redis.from_url(os.environ["ASSETQ_REDIS_URL"]).hincrby(CRASHES_KEY, asset_id, 1)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # billiard's soft time limit signal
    while True:
        time.sleep(60)


def _first_time(asset_id: str) -> bool:
    import redis

    return bool(redis.Redis.from_url(os.environ["ASSETQ_REDIS_URL"]).set(ONCE_KEY + asset_id, 1, nx=True))


def _patch_main_process() -> None:
    from typing import Any

    from worker.leases import Lease

    fetch, ack = Lease.fetch, Lease.ack

    def fetch_then_maybe_die(self: Lease, lists: list[str]) -> Any:
        got = fetch(self, lists)
        if got is not None:
            _reach("fetched")
        return got

    def ack_then_maybe_die(self: Lease, delivery_tag: str) -> None:
        ack(self, delivery_tag)
        _reach("acked")

    Lease.fetch = fetch_then_maybe_die  # type: ignore[method-assign]
    Lease.ack = ack_then_maybe_die  # type: ignore[method-assign]


def _patch_main_process_amqp() -> None:
    """The same two moments on RabbitMQ: a task message just delivered to the worker, an ack just sent."""
    from typing import Any

    from amqp.channel import Channel

    deliver, ack = Channel._on_basic_deliver, Channel.basic_ack

    def deliver_then_maybe_die(self: Channel, *args: Any) -> Any:
        msg = args[-1]
        if (getattr(msg, "properties", None) or {}).get("application_headers", {}).get("task"):
            _reach("fetched")  # a task message (not an event or a control message) is in this process
        return deliver(self, *args)

    def ack_then_maybe_die(self: Channel, *args: Any, **kwargs: Any) -> Any:
        out = ack(self, *args, **kwargs)
        _reach("acked")
        return out

    Channel._on_basic_deliver = deliver_then_maybe_die  # type: ignore[method-assign]
    Channel.basic_ack = ack_then_maybe_die  # type: ignore[method-assign]


def _on_rabbitmq() -> bool:
    return (os.environ.get("ASSETQ_BROKER_URL") or "").split("://", 1)[0] in ("amqp", "amqps", "pyamqp")


def _patch_sinks_for_kills() -> None:
    from typing import Any

    from worker.sinks import RedisSink, S3Sink

    stage, record, s3_write = RedisSink.stage, RedisSink.write, S3Sink.write

    def staged(self: RedisSink, results: Any) -> Any:
        docs = stage(self, results)
        _reach("staged")
        return docs

    def s3(self: S3Sink, results: Any, output: Any) -> None:
        if os.environ.get("ASSETQ_FAULT_KILL_AT") == "s3_partial" and len(results) > 1:
            s3_write(self, results[:1], output)
            _reach("s3_partial")
        s3_write(self, results, output)
        _reach("s3_written")

    def recorded(self: RedisSink, results: Any, output: Any) -> None:
        record(self, results, output)
        _reach("recorded")

    RedisSink.stage = staged  # type: ignore[method-assign]
    S3Sink.write = s3  # type: ignore[method-assign]
    RedisSink.write = recorded  # type: ignore[method-assign]


def _patch_pool_child(**_: object) -> None:
    from typing import Any

    from worker.pipeline.run import Pipeline
    from worker.sinks import RedisSink

    if os.environ.get("ASSETQ_FAULT_KILL_AT") in CHILD_MOMENTS:
        _reached.clear()  # counted per pool process
        _patch_sinks_for_kills()

    poison = os.environ.get("ASSETQ_FAULT_POISON")
    broken = os.environ.get("ASSETQ_FAULT_RAISE")
    after_write = os.environ.get("ASSETQ_FAULT_CRASH_AFTER_WRITE")
    delay = float(os.environ.get("ASSETQ_FAULT_DELAY_S") or 0)
    hang = os.environ.get("ASSETQ_FAULT_HANG")
    process, write = Pipeline.process, RedisSink.write

    def faulty_process(self: Pipeline, batch_id: str, assets: Any, tasks: Any) -> Any:
        ids = {a.get("id") for a in assets}
        if poison and poison in ids:
            _crash(poison)
        if broken and broken in ids:
            raise RuntimeError(f"injected failure processing {broken}")
        if hang and hang in ids:
            _hang(hang)
        _reach("task_started")
        if delay:
            time.sleep(delay)
        results = process(self, batch_id, assets, tasks)
        _reach("processed")
        return results

    def faulty_write(self: RedisSink, results: Any, output: Any) -> None:
        write(self, results, output)
        if after_write and after_write in {r["asset_id"] for r in results} and _first_time(after_write):
            _crash(after_write)

    Pipeline.process = faulty_process  # type: ignore[method-assign]
    RedisSink.write = faulty_write  # type: ignore[method-assign]


if any(os.environ.get(k) for k in HOOKS):
    from celery import signals

    signals.worker_process_init.connect(_patch_pool_child, weak=False)
    if os.environ.get("ASSETQ_FAULT_KILL_AT") in MAIN_MOMENTS:
        _patch_main_process_amqp() if _on_rabbitmq() else _patch_main_process()
