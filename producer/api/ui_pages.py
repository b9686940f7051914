"""The operator page's HTML: plain server-rendered markup and one stylesheet, no front-end build.

Every value that comes from Redis is escaped here (asset ids, error messages and
model names are user input in the end).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from html import escape
from typing import Any
from urllib.parse import quote

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:baseline}
header a{color:#fff;text-decoration:none}header h1{font-size:18px;margin:0}
main{padding:16px 24px;max-width:1100px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 16px;margin-bottom:16px}
h2{font-size:15px;margin:0 0 10px}table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:5px 8px;border-bottom:1px solid #eef0f3;vertical-align:top}
th{font-weight:600;color:#5a6372}code{font-size:12px}
.bar{display:flex;height:14px;width:260px;border-radius:3px;overflow:hidden;background:#dde1e7}
.bar span{display:block;height:100%}.ok{background:#2f9e5b}.skipped{background:#e0a526}
.failed{background:#d64545}.pending{background:#c4cad3}
.legend span{display:inline-block;margin-right:10px}.dot{width:9px;height:9px;border-radius:2px;margin-right:3px}
.muted{color:#7b8494}.flash{background:#e8f5ec;border-color:#b7dfc4}
button{font:inherit;padding:3px 10px;border:1px solid #1d2330;background:#fff;border-radius:4px;cursor:pointer}
button:hover{background:#1d2330;color:#fff}
"""

REFRESH_SCRIPT = """
<script>
// Redraw the live part every 1.5 s from the same page's fragment (server-rendered HTML, no build step).
setInterval(async () => {
  try {
    const r = await fetch(location.pathname + "?fragment=live", {credentials: "same-origin"});
    if (r.ok) document.getElementById("live").innerHTML = await r.text();
  } catch (e) { /* the server restarting: try again at the next tick */ }
}, 1500);
</script>
"""


def page(title: str, body: str, refresh: bool = True) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)} · assetq</title><style>{STYLE}</style></head><body>"
        '<header><h1><a href="/ui">assetq</a></h1><span class=muted>batches, assets, workers</span></header>'
        f"<main>{body}</main>{REFRESH_SCRIPT if refresh else ''}</body></html>"
    )


def login(error: str | None = None) -> str:
    note = f"<p class=failed style='color:#fff;padding:4px 8px'>{escape(error)}</p>" if error else ""
    form = (
        "<section><h2>Sign in</h2><p>Enter one of the tokens in <code>ASSETQ_API_TOKENS</code>.</p>"
        f"{note}<form method=post action=/ui/login>"
        "<input type=password name=token autocomplete=current-password size=40 autofocus> "
        "<button type=submit>Sign in</button></form></section>"
    )
    return page("sign in", form, refresh=False)


def progress(st: dict[str, Any]) -> str:
    """A stacked bar of ok, skipped, failed and pending, with the counts beside it."""
    total = max(int(st["total"]), 1)
    parts = [(name, int(st[name])) for name in ("ok", "skipped", "failed", "pending")]
    segments = "".join(
        f'<span class={name} style="width:{100 * n / total:.3f}%" title="{name} {n}"></span>' for name, n in parts if n
    )
    counts = " ".join(
        f'<span class="count-{name}"><span class="dot {name}"></span>{name} {n}</span>' for name, n in parts
    )
    attrs = " ".join(f'data-{name}="{n}"' for name, n in parts)
    return (
        f'<div class=progress data-batch="{escape(st["batch_id"])}" {attrs}>'
        f'<div class=bar>{segments}</div><div class="legend muted">{counts}</div></div>'
    )


def batches_table(statuses: Iterable[dict[str, Any]]) -> str:
    rows = []
    for st in statuses:
        bid = st["batch_id"]
        link = f'<a href="/ui/batches/{quote(bid)}"><code>{escape(bid)}</code></a>'
        dead = f"{st['dead_letters']} dead letters" if st["dead_letters"] else ""
        state = "complete" if st["complete"] else "running"
        rows.append(
            f"<tr><td>{link}<div class=muted>{_ago(st['created_at'])}</div></td><td>{progress(st)}</td>"
            f"<td>{st['done']}/{st['total']} · {state}</td><td>{dead}</td></tr>"
        )
    if not rows:
        return "<p class=muted>No batches yet.</p>"
    return "<table><tr><th>batch</th><th>progress</th><th>done</th><th></th></tr>" + "".join(rows) + "</table>"


def workers_table(workers: dict[str, dict[str, Any]]) -> str:
    if not workers:
        return "<p class=muted>No live worker: chunks wait in the queue until one starts.</p>"
    rows = []
    for name, info in sorted(workers.items()):
        models = "<br>".join(
            f"{escape(task)}/{escape(type_)}: {escape(', '.join(names))}"
            for task, types in sorted((info.get("catalog") or {}).items())
            for type_, names in sorted(types.items())
        )
        seen = _ago(float(info["seen"])) if info.get("seen") else ""
        rows.append(
            f'<tr class=worker data-worker="{escape(name)}"><td><code>{escape(name)}</code>'
            f"<div class=muted>seen {seen}</div></td><td>{escape(str(info.get('device', '?')))}</td>"
            f"<td>{models}</td></tr>"
        )
    return "<table><tr><th>worker</th><th>device</th><th>models</th></tr>" + "".join(rows) + "</table>"


def overview_live(statuses: list[dict[str, Any]], workers: dict[str, dict[str, Any]]) -> str:
    return (
        f"<section><h2>Batches</h2>{batches_table(statuses)}</section>"
        f"<section><h2>Live workers</h2>{workers_table(workers)}</section>"
    )


def batch_live(st: dict[str, Any], held: dict[str, Any]) -> str:
    waiting = held.get("waiting_for_recovery") or []
    recovery = (
        f"<p>{len(waiting)} chunk(s) wait for a dead worker's lease to lapse: "
        + ", ".join(f"<code>{escape(str(w['chunk_id']))}</code>" for w in waiting)
        + "</p>"
        if waiting
        else ""
    )
    return (
        f"<section><h2>Progress</h2>{progress(st)}"
        f"<p>{st['done']} of {st['total']} done · {held.get('chunks_held', 0)} chunk(s) held by workers now</p>"
        f"{recovery}</section>"
    )


def skipped_groups(groups: dict[str, list[str]], counts: dict[str, int], capped: bool) -> str:
    if not counts:
        return "<section><h2>Skipped assets</h2><p class=muted>None skipped.</p></section>"
    rows = "".join(
        f'<tr class=skip-kind data-kind="{escape(kind)}"><td><code>{escape(kind)}</code></td><td>{n}</td>'
        f"<td>{', '.join(f'<code>{escape(a)}</code>' for a in groups[kind])}{' …' if n > len(groups[kind]) else ''}"
        "</td></tr>"
        for kind, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    note = "<p class=muted>Counted over the first skipped assets only.</p>" if capped else ""
    return (
        "<section><h2>Skipped assets by <code>error.kind</code></h2>"
        f"<table><tr><th>kind</th><th>assets</th><th>examples</th></tr>{rows}</table>{note}</section>"
    )


def dead_letters(batch_id: str, entries: list[dict[str, Any]], skipped: int) -> str:
    action = f"/ui/batches/{quote(batch_id)}/replay"
    rows = []
    for e in entries:
        err = e.get("error") or {}
        ids = e.get("asset_ids") or []
        shown = ", ".join(f"<code>{escape(str(a))}</code>" for a in ids[:10]) + (" …" if len(ids) > 10 else "")
        rows.append(
            f'<tr class=dead-letter data-entry="{escape(e["entry_id"])}"><td><code>{escape(e["entry_id"])}</code>'
            f"<div class=muted>{e.get('attempts')} attempt(s)</div></td>"
            f"<td><b>{escape(str(err.get('kind')))}</b>: {escape(str(err.get('message')))}</td><td>{shown}</td>"
            f'<td><form method=post action="{action}"><input type=hidden name=entry value="{escape(e["entry_id"])}">'
            "<button type=submit class=replay>Replay</button></form></td></tr>"
        )
    table = (
        "<table><tr><th>entry</th><th>reason</th><th>assets</th><th></th></tr>" + "".join(rows) + "</table>"
        if rows
        else "<p class=muted>No dead letters.</p>"
    )
    skipped_button = (
        f'<form method=post action="{action}"><input type=hidden name=include_skipped value=1>'
        f"<button type=submit class=replay-skipped>Replay the {skipped} skipped asset(s) too</button></form>"
        if skipped
        else ""
    )
    return f"<section><h2>Dead letters</h2>{table}{skipped_button}</section>"


def flash(message: str | None) -> str:
    return f"<section class=flash>{escape(message)}</section>" if message else ""


def _ago(ts: float) -> str:
    s = max(0, int(time.time() - ts))
    if s < 90:
        return f"{s} s ago"
    if s < 5400:
        return f"{s // 60} min ago"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))
