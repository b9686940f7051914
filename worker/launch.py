"""``assetq worker``: start a Celery worker pinned to a device, or one per device."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import FrameType

from worker.devices import apply, parse_device, parse_devices, placement


def celery_argv(
    queues: list[str], node: str, concurrency: int, pool: str, loglevel: str, extra: list[str]
) -> list[str]:
    return [
        "worker",
        "-Q",
        ",".join(queues),
        "-n",
        node,
        "--concurrency",
        str(concurrency),
        "--pool",
        pool,
        "--loglevel",
        loglevel,
        "--task-events",
        *extra,
    ]


def launch(
    device: str | None,
    devices: str | None,
    concurrency: int | None,
    pool: str,
    loglevel: str,
    queues: str | None,
    extra: list[str],
    name: str | None = None,
) -> int:
    from config.settings import get_settings

    if devices:
        return _launch_many(parse_devices(devices), concurrency, pool, loglevel, queues, extra)
    if concurrency:
        # The pool children read it too: each process's inference threads are its share of the cores.
        os.environ["ASSETQ_CONCURRENCY"] = str(concurrency)
        get_settings.cache_clear()
    settings = get_settings()
    dev = parse_device(device or settings.device)
    place = placement(dev, settings.queue, settings.gpu_queue)
    apply(place)  # before onnxruntime is imported anywhere in this process
    get_settings.cache_clear()
    settings = get_settings()
    os.environ.setdefault("ASSETQ_NODE", name or place.node_name)
    from contract.amqp import dead_letter_queue, is_amqp
    from worker.app import app

    consumed = [settings.interactive_queue, *place.queues]
    if is_amqp(settings.broker):
        # What RabbitMQ dead-lettered at the delivery limit: split or recorded as poison (tasks/process.py).
        consumed.append(dead_letter_queue(settings))
    argv = celery_argv(
        # Interactive chunks (/predict) first: on Redis the transport takes from the queues in this order.
        queues.split(",") if queues else consumed,
        name or place.node_name,
        concurrency or settings.concurrency,
        pool,
        loglevel,
        [a for a in extra if a != "--"],
    )
    app.worker_main(argv)
    return 0


def _launch_many(
    devices: list[str], concurrency: int | None, pool: str, loglevel: str, queues: str | None, extra: list[str]
) -> int:
    """One child process per device, each seeing only its own GPU; stop them all together."""
    procs: list[subprocess.Popen[bytes]] = []
    for dev in devices:
        cmd = [sys.executable, "-m", "cli", "worker", "--device", dev, "--pool", pool, "--loglevel", loglevel]
        if concurrency:
            cmd += ["--concurrency", str(concurrency)]
        if queues:
            cmd += ["--queues", queues]
        cmd += extra
        procs.append(subprocess.Popen(cmd))

    def forward(signum: int, _frame: FrameType | None) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [p.wait() for p in procs]
    return max(codes, default=0)
