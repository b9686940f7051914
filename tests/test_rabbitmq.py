"""assetq on RabbitMQ (``ASSETQ_BROKER_URL=amqp://…``) against the real local broker: the queues it declares,
retries with a countdown through RabbitMQ's native delayed delivery, interactive work overtaking bulk."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from config.settings import Settings
from contract.amqp import dead_letter_queue
from tests.faultinject.scenario import cli, done, producer_for, wait_until, while_busy
from tests.rabbit_fixtures import RabbitScene, rabbit_photos, rabbit_redis, rabbit_scene, vhost
from tools.testbed.rabbit import rabbitmqctl
from tools.testbed.services import TcpProxy

__all__ = ["rabbit_photos", "rabbit_redis", "rabbit_scene", "vhost"]  # fixtures
integration = pytest.mark.integration


def test_the_hard_time_limit_must_stay_below_rabbitmqs_consumer_timeout() -> None:
    amqp = "amqp://guest:guest@127.0.0.1:5672//"
    with pytest.raises(ValidationError, match="broker_consumer_timeout_s"):
        Settings(_env_file=None, broker_url=amqp, soft_time_limit_s=1700, time_limit_s=1800)
    assert Settings(_env_file=None, broker_url=amqp, broker_consumer_timeout_s=3600, time_limit_s=1800)
    assert Settings(_env_file=None, soft_time_limit_s=1700, time_limit_s=1800)  # Redis has no such timeout


@integration
def test_work_queues_are_quorum_queues_with_a_delivery_limit_and_a_dead_letter_exchange(
    rabbit_scene: RabbitScene,
) -> None:
    scene = rabbit_scene
    env = scene.env(max_deliveries=4)
    scene.worker(env)
    s = producer_for(env).settings
    rows = rabbitmqctl("list_queues", "-p", scene.vhost.name, "--no-table-headers", "name", "type", "arguments")
    queues = {r.split("\t")[0]: r.split("\t")[1:] for r in rows.splitlines() if r.strip()}
    for name in (s.queue, s.gpu_queue, s.interactive_queue):
        kind, args = queues[name]
        assert kind == "quorum", (name, kind)
        for expected in ("x-delivery-limit", "3", "assetq.dlx", dead_letter_queue(s), "at-least-once"):
            assert expected in args, (name, args)
    assert queues[dead_letter_queue(s)][0] == "quorum"
    # Celery's native delayed delivery is set up, and every work queue (gpu too, on a CPU worker) bound to it.
    assert {f"celery_delayed_{n}" for n in range(28)} <= set(queues)
    bindings = rabbitmqctl("list_bindings", "-p", scene.vhost.name, "--no-table-headers", "source_name", "routing_key")
    delayed = {r.split("\t")[1] for r in bindings.splitlines() if r.startswith("celery_delayed_delivery\t")}
    assert {f"#.{q}" for q in (s.queue, s.gpu_queue, s.interactive_queue)} <= delayed, delayed


@integration
def test_retries_with_a_countdown_pass_through_native_delayed_delivery(rabbit_scene: RabbitScene) -> None:
    """S3 down: each chunk retries max_retries (3) times, each countdown waiting in RabbitMQ's delayed
    queues (not in a worker), then is dead-lettered ``transient``; S3 back, ``assetq replay`` finishes it.
    Three retries in a row on RabbitMQ 3.10 cover celery #10111 (stuck after two) and #9867 (a retry
    dropped as a dead-letter cycle)."""
    scene = rabbit_scene
    proxy = TcpProxy(int(scene.s3_url.rsplit(":", 1)[1])).start()
    try:
        # Countdowns of 2-3 s (3 s with jitter, rounded up): long enough to be seen waiting in the broker.
        env = {**scene.env(retry_backoff_s=3, retry_backoff_max_s=3), "ASSETQ_S3_ENDPOINT_URL": proxy.url}
        assets = scene.spec()["assets"][:6]
        scene.worker(env)
        proxy.pause()
        p = producer_for(env)
        batch = p.submit(scene.spec(assets))

        def waiting_in_delayed_queues() -> bool:
            # 2 s and 3 s both pass level 1 of the delayed queues (2^1 s); 3 s then level 0 too
            return any(scene.vhost.live(f"celery_delayed_{level}")[0] > 0 for level in (1, 0))

        wait_until(waiting_in_delayed_queues, 60, f"a retry in the delayed-delivery queues\n{scene.logs()}", 0.2)
        st = scene.wait(p, batch, 120)
        assert st["failed"] == len(assets), st
        letters = p.store.dead_letters(batch)
        assert len(letters) == 2, letters
        for entry in letters.values():
            assert entry["error"]["kind"] == "transient" and entry["attempts"] == 4, entry
            # three countdowns of at least 2 s each
            assert entry["dead_lettered_at"] - entry["first_failed_at"] >= 6.0, entry
        proxy.resume()
        replayed = cli(env, "replay", batch)
        assert replayed.returncode == 0, replayed
        st = scene.wait(p, batch, 60)
        assert st["failed"] == 0 and st["done"] == len(assets), st
    finally:
        proxy.stop()


@integration
def test_interactive_chunks_overtake_bulk_on_rabbitmq(rabbit_scene: RabbitScene) -> None:
    """Quorum queues have no message priority: the interactive queue is a queue of its own, consumed by
    every worker with its own prefetch, so an interactive chunk runs next, ahead of the bulk backlog."""
    scene = rabbit_scene
    env = scene.env(chunk_size=1, fault_delay_s=0.4)
    scene.worker(env)
    p = producer_for(env)
    bulk = p.submit(scene.spec())
    total = len(scene.photos.ids)
    one = scene.spec()["assets"][:1]
    interactive: list[str] = []
    while_busy(p.redis, bulk, lambda: interactive.append(p.submit(scene.spec(one), queue=p.settings.interactive_queue)))
    wait_until(lambda: bool(p.status(interactive[0])["complete"]), 30, f"the interactive chunk\n{scene.logs()}")
    bulk_done = done(p, bulk)
    # one bulk chunk was running, at most one more may have been handed to the pool before it
    assert bulk_done <= 3, (bulk_done, total)
    scene.wait(p, bulk, 90)
