"""In-process commands: ``assetq run`` (the pipeline over files, no Redis) and ``assetq classify``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

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
    tasks_from_spec_file,
)


def cmd_run(a: argparse.Namespace) -> int:
    from contract.catalog import default_tasks, scan_model_dir
    from contract.spec import SpecError, check_models, parse_tasks
    from producer.assets import collect_assets
    from worker.local import run_local, write_outputs

    conf = settings()
    if a.concurrency is not None:
        conf = conf.model_copy(update={"concurrency": max(1, a.concurrency)})
    if "warmup" not in conf.model_fields_set:
        # One run, whose first images follow at once: a dummy batch per model would only add to its
        # time (faces on 24 12 MP originals: 0.1-0.25 s of a 2.3 s command). ASSETQ_WARMUP=true keeps it.
        conf = conf.model_copy(update={"warmup": False})
    catalog = scan_model_dir(conf.model_dir)
    tasks = tasks_from_spec_file(a.spec) or default_tasks(catalog)
    if not tasks:
        print(f"error: no models installed in {conf.model_dir}; run `assetq models install`", file=sys.stderr)
        return EXIT_ERROR
    try:
        check_models(parse_tasks(tasks), catalog)
    except SpecError as e:
        print_errors(e.errors)
        return EXIT_INVALID
    collected = collect_assets([Path(p) for p in a.paths], extensions=conf.image_extensions)
    left_out = collected.found.left_out_note()
    if not collected.assets:
        print("error: no files found" + (f"; {left_out}" if left_out else ""), file=sys.stderr)
        return EXIT_ERROR
    print(f"assetq run: {len(collected.assets)} files, tasks: {', '.join(tasks)}", file=sys.stderr)
    bar = Progress(len(collected.assets), "assetq run")
    results, summary = run_local(collected.assets, tasks, conf, progress=bar.advance)
    bar.close()
    out = Path(a.out)
    write_outputs(out, results, summary)
    print_summary(summary, out, left_out)
    return EXIT_OK


def _zero_shot_block(path: str, model: str | None, catalog: Any) -> dict[str, Any]:
    data = read_json(path)
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
    from producer.assets import collect_assets
    from producer.evaluate import (
        evaluate,
        format_report,
        plot_confusion_matrix,
        true_label,
        write_predictions_csv,
        write_report_csv,
    )

    conf = settings()
    root = Path(a.dir)
    p = producer() if a.submit else None
    catalog = p.catalog() if p else scan_model_dir(conf.model_dir)
    try:
        block = _zero_shot_block(a.classes, a.model, catalog)
    except (ValueError, OSError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID
    tasks = {"zero-shot": block}
    collected = collect_assets([root], extensions=conf.image_extensions)
    if left_out := collected.found.left_out_note():
        print(f"assetq classify: {left_out}", file=sys.stderr)
    assets = collected.assets
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
            bar = Progress(len(assets), "assetq classify")
            results, _ = run_local(assets, tasks, conf, progress=bar.advance)
            bar.close()
    except SpecError as e:
        print_errors(e.errors)
        return EXIT_INVALID
    rows = []
    truth: list[str] = []
    predicted: list[str | None] = []
    for r in sorted(results, key=lambda r: r["asset_id"]):
        file = collected.files[r["asset_id"]]
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


def register(sub: Subcommands) -> None:
    r = sub.add_parser("run", help="run the pipeline in-process over files/folders (no Redis)")
    r.add_argument("paths", nargs="+", help="image files, or folders (their image files, by extension)")
    r.add_argument("--out", required=True, help="directory for results.jsonl and summary.json")
    r.add_argument("--spec", help="JSON file with a tasks block (default: every installed task)")
    r.add_argument(
        "--concurrency", type=int, default=None, help="processes sharing the chunks (default ASSETQ_CONCURRENCY)"
    )
    r.set_defaults(fn=cmd_run)

    c = sub.add_parser("classify", help="zero-shot classify every image under DIR (CSV; --eval for metrics)")
    c.add_argument("dir")
    c.add_argument("--classes", required=True, help="JSON: {class: {positive: [...], negative: [...]}}")
    c.add_argument("--model", help="CLIP model name (default: the installed one)")
    c.add_argument("--eval", action="store_true", help="DIR's subfolders are the true labels: print metrics")
    c.add_argument("--out", default="out/classify", help="where predictions.csv (and the report) go")
    c.add_argument("--submit", action="store_true", help="run through Redis and the workers instead of in-process")
    c.add_argument("--timeout", type=float, default=None)
    c.set_defaults(fn=cmd_classify)
