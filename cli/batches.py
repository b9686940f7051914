"""Batch commands through Redis: submit, status, results, failures, replay, and validate (offline).

These go through the ``Producer`` and import no worker code.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.common import (
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_OK,
    Progress,
    Subcommands,
    print_errors,
    print_summary,
    producer,
    read_json,
    settings,
)

if TYPE_CHECKING:
    from producer.client import Producer

COUNTS = ("batch_id", "total", "ok", "skipped", "failed")


def cmd_validate(a: argparse.Namespace) -> int:
    from contract.catalog import scan_model_dir
    from contract.spec import SpecError, check_models, parse_spec, parse_tasks

    try:
        data = read_json(a.spec)
    except (OSError, json.JSONDecodeError) as e:
        print(f"error: {a.spec}: {e}", file=sys.stderr)
        return EXIT_INVALID
    try:
        tasks = (
            parse_spec(data).tasks
            if isinstance(data, dict) and "assets" in data
            else parse_tasks(data.get("tasks", data) if isinstance(data, dict) else data)
        )
        catalog = scan_model_dir(settings().model_dir)
        if catalog and not a.schema_only:
            check_models(tasks, catalog)
    except SpecError as e:
        print_errors(e.errors)
        return EXIT_INVALID
    print("ok")
    return EXIT_OK


def cmd_submit(a: argparse.Namespace) -> int:
    from contract.catalog import default_tasks
    from contract.errors import ReplicationError
    from contract.spec import SpecError
    from producer.assets import collect_assets

    p = producer()
    spec: dict[str, Any] = {}
    if a.spec:
        data = read_json(a.spec)
        spec = dict(data) if isinstance(data, dict) and ("tasks" in data or "assets" in data) else {"tasks": data}
    left_out = ""
    if a.paths:
        collected = collect_assets([Path(x) for x in a.paths], inline=a.inline, extensions=p.settings.image_extensions)
        spec["assets"] = spec.get("assets", []) + collected.assets
        left_out = collected.found.left_out_note()
        if left_out:  # on stderr: standard output is the batch id alone, for scripts
            print(f"assetq submit: {left_out}", file=sys.stderr)
    if "tasks" not in spec:
        spec["tasks"] = default_tasks(p.catalog())
    if a.batch_id:
        spec["batch_id"] = a.batch_id
    if a.s3_results_bucket:
        spec["output"] = {**spec.get("output", {}), "s3": {"bucket": a.s3_results_bucket}}
    try:
        batch = p.submit(spec)
    except SpecError as e:
        print_errors(e.errors)
        return EXIT_INVALID
    except ReplicationError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    print(batch)
    if not a.wait:
        return EXIT_OK
    return _wait_and_write(p, batch, Path(a.out) if a.out else None, a.timeout, left_out)


def _wait_and_write(p: Producer, batch: str, out: Path | None, timeout: float | None, left_out: str) -> int:
    st = p.status(batch)
    bar = Progress(st["total"], f"batch {batch[:8]}")
    t0 = time.perf_counter()

    def progress(s: dict[str, Any]) -> None:
        bar.show(s["done"], ok=s["ok"], skipped=s["skipped"], failed=s["failed"])

    try:
        p.wait(batch, timeout_s=timeout, progress=progress)
    except TimeoutError as e:
        bar.close()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    bar.close()
    st = p.status(batch)
    wall = time.perf_counter() - t0
    summary = {k: st[k] for k in COUNTS}
    summary.update(wall_s=round(wall, 3), images_per_s=round(st["total"] / wall, 3) if wall > 0 else None)
    if out is not None:
        from contract.output import write_outputs

        write_outputs(out, p.results(batch), summary)
    print_summary(summary, out, left_out)
    return EXIT_OK


def cmd_status(a: argparse.Namespace) -> int:
    p = producer()
    try:
        st = p.status(a.batch)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return EXIT_ERROR
    # Chunks in flight, and any a dead worker held that wait to be put back (worker_dead_after_s).
    print(json.dumps({**st, "held": p.held(a.batch)}, indent=2))
    return EXIT_OK


def cmd_results(a: argparse.Namespace) -> int:
    p = producer()
    results = p.results(a.batch)
    if a.out:
        from contract.output import write_outputs

        st = p.status(a.batch)
        write_outputs(Path(a.out), results, {k: st[k] for k in COUNTS})
        print(f"{len(results)} results written to {Path(a.out) / 'results.jsonl'}")
    else:
        from contract import documents

        for r in results:
            print(documents.encode(r).decode())
    return EXIT_OK


def cmd_failures(a: argparse.Namespace) -> int:
    entries = producer().failures(a.batch)
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


def cmd_replay(a: argparse.Namespace) -> int:
    try:
        out = producer().replay(
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


def register(sub: Subcommands) -> None:
    s = sub.add_parser("submit", help="validate and enqueue a batch into Redis")
    s.add_argument("paths", nargs="*", help="image files, or folders (their image files, by extension)")
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

    v = sub.add_parser("validate", help="check a spec; prints ok or each bad field")
    v.add_argument("spec")
    v.add_argument("--schema-only", action="store_true", help="skip the installed-models check")
    v.set_defaults(fn=cmd_validate)
