"""assetq's own counters, in Prometheus text format.

Flower's ``/metrics`` covers Celery (tasks by state, runtime, workers online);
these cover what Flower cannot see: assets by outcome and per-step latency.
Workers add to one Redis hash; ``assetq metrics --serve PORT`` exposes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis

from contract.connection import text
from contract.keys import METRICS

METRICS_KEY = METRICS


def record_chunk(client: redis.Redis, results: Iterable[dict[str, Any]]) -> None:
    """Count assets by status and add each step's per-asset time to its latency sum."""
    pipe = client.pipeline(transaction=False)
    for r in results:
        pipe.hincrby(METRICS_KEY, f"assets|{r['status']}", 1)
        if r["status"] == "skipped" and r.get("error"):
            pipe.hincrby(METRICS_KEY, f"skipped|{r['error']['kind']}", 1)
        for step, ms in (r.get("timings_ms") or {}).items():
            pipe.hincrbyfloat(METRICS_KEY, f"step_ms_sum|{step}", float(ms))
            pipe.hincrby(METRICS_KEY, f"step_count|{step}", 1)
    pipe.execute()


def record_dead_letter(client: redis.Redis, kind: str) -> None:
    client.hincrby(METRICS_KEY, f"deadletters|{kind}", 1)


# (hash field prefix, metric name, label, help) of the plain counters.
_COUNTERS = (
    ("assets", "assetq_assets_total", "status", "Asset processings, by status (a redelivered asset counts again)."),
    ("skipped", "assetq_skipped_total", "kind", "Skipped assets, by reason."),
    ("deadletters", "assetq_deadletters_total", "kind", "Chunks dead-lettered, by reason."),
    (
        "recovered",
        "assetq_recovered_deliveries_total",
        "reason",
        "Deliveries a dead worker held, put back on their queue by a live one (lease_expired, process_gone, "
        "unclaimed_fetch).",
    ),
)


def render(client: redis.Redis) -> str:
    raw = {text(k): float(v) for k, v in client.hgetall(METRICS_KEY).items()}
    lines: list[str] = []
    for prefix, name, label, help_text in _COUNTERS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        lines += [
            f'{name}{{{label}="{field.split("|", 1)[1]}"}} {value:g}'
            for field, value in sorted(raw.items())
            if field.startswith(f"{prefix}|")
        ]
    lines += ["# HELP assetq_step_seconds Per-asset time in each pipeline step.", "# TYPE assetq_step_seconds summary"]
    for f, v in sorted(raw.items()):
        if f.startswith("step_ms_sum|"):
            step = f.split("|", 1)[1]
            lines.append(f'assetq_step_seconds_sum{{step="{step}"}} {v / 1000:.6f}')
            lines.append(f'assetq_step_seconds_count{{step="{step}"}} {raw.get(f"step_count|{step}", 0):g}')
    return "\n".join(lines) + "\n"


def serve(client: redis.Redis, port: int, address: str = "0.0.0.0") -> None:  # pragma: no cover - thin
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.rstrip("/") != "/metrics":
                self.send_error(404)
                return
            body = render(client).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    ThreadingHTTPServer((address, port), Handler).serve_forever()
