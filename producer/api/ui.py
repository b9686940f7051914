"""``/ui``: the operator page, for what Flower cannot show. Flower lists chunk tasks; an operator
thinks in batches and assets.

* ``/ui``: the recent batches, each with a bar of ok, skipped, failed and pending, and the live
  workers with their device and models.
* ``/ui/batches/<id>``: that batch's progress, its skipped assets grouped by ``error.kind``, its
  dead letters with their reasons, and replay buttons that call ``Producer.replay``, the code
  ``assetq replay`` runs.

The live parts redraw themselves from ``?fragment=live`` every 1.5 s. Behind the same tokens
as the API: a bearer header, or the cookie the sign-in form sets (``producer/api/auth.py``).
"""

from __future__ import annotations

import json
from collections import Counter
from html import escape
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from contract.keys import key
from producer.api import ui_pages
from producer.api.auth import COOKIE
from producer.api.state import ApiState, get_state

router = APIRouter(prefix="/ui", tags=["operator page"], include_in_schema=False)

RECENT_BATCHES = 30
SKIPPED_SCAN_MAX = 20_000  # skipped documents read to group a batch's skips by kind
EXAMPLES_PER_KIND = 8
COOKIE_MAX_AGE_S = 12 * 3600


def _signed_in(request: Request) -> bool:
    return get_state(request).auth.allows(request, cookie=True)


def _same_origin(request: Request) -> bool:
    """A form post from this page itself (cookie-authenticated posts must not come from another site)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        return True  # not sent by every client; the SameSite=Strict cookie already keeps other sites out
    return urlsplit(origin).netloc == request.headers.get("host", "")


@router.get("", response_class=HTMLResponse)
def overview(request: Request, fragment: str | None = None) -> Response:
    if not _signed_in(request):
        return HTMLResponse(ui_pages.login(), status_code=401)
    p = get_state(request).producer
    statuses = [st for bid in p.store.recent_batches(RECENT_BATCHES) if (st := p.store.status(bid)) is not None]
    live = ui_pages.overview_live(statuses, p.workers.live())
    if fragment == "live":
        return HTMLResponse(live)
    return HTMLResponse(ui_pages.page("batches", f"<div id=live>{live}</div>"))


@router.post("/login")
async def sign_in(request: Request) -> Response:
    async with request.form(max_files=0, max_fields=4) as form:
        token = form.get("token")
    auth = get_state(request).auth
    if not isinstance(token, str) or not auth.accepts(token):
        return HTMLResponse(ui_pages.login("That token is not in ASSETQ_API_TOKENS."), status_code=401)
    response = RedirectResponse("/ui", status_code=303)
    secure = request.url.scheme == "https"
    response.set_cookie(
        COOKIE, token, max_age=COOKIE_MAX_AGE_S, httponly=True, samesite="strict", secure=secure, path="/ui"
    )
    return response


@router.get("/batches/{batch_id}", response_class=HTMLResponse)
def batch(request: Request, batch_id: str, fragment: str | None = None, replayed: str | None = None) -> Response:
    if not _signed_in(request):
        return HTMLResponse(ui_pages.login(), status_code=401)
    state = get_state(request)
    p = state.producer
    st = p.store.status(batch_id)
    if st is None:
        raise HTTPException(404, f"unknown batch {batch_id!r} (expired or never submitted)")
    live = ui_pages.batch_live(st, p.held(batch_id))
    if fragment == "live":
        return HTMLResponse(live)
    groups, counts, capped = _skipped_by_kind(state, batch_id)
    body = (
        f"<h2>Batch <code>{escape(batch_id)}</code></h2>"
        f"{ui_pages.flash(replayed)}<div id=live>{live}</div>"
        f"{ui_pages.skipped_groups(groups, counts, capped)}"
        f"{ui_pages.dead_letters(batch_id, p.failures(batch_id), st['skipped'])}"
    )
    return HTMLResponse(ui_pages.page(f"batch {batch_id}", body))


@router.post("/batches/{batch_id}/replay")
async def replay(request: Request, batch_id: str) -> Response:
    if not _signed_in(request):
        return HTMLResponse(ui_pages.login(), status_code=401)
    if not _same_origin(request):
        raise HTTPException(403, "a replay must be posted from this server's own page")
    async with request.form(max_files=0, max_fields=4) as form:
        entry, include_skipped = form.get("entry"), form.get("include_skipped") == "1"
    state = get_state(request)
    asset_ids = _entry_assets(state, batch_id, entry) if isinstance(entry, str) else None
    try:
        out = state.producer.replay(batch_id, asset_ids=asset_ids, include_skipped=include_skipped)
    except KeyError as e:
        raise HTTPException(404, e.args[0]) from None
    message = f"Re-enqueued {out['count']} asset(s)."
    return RedirectResponse(f"/ui/batches/{quote(batch_id)}?replayed={quote(message)}", status_code=303)


def _entry_assets(state: ApiState, batch_id: str, entry_id: str) -> list[str]:
    """The asset ids of one dead-lettered chunk: its replay button replays exactly that chunk."""
    for e in state.producer.failures(batch_id):
        if e["entry_id"] == entry_id:
            return [str(a) for a in e["asset_ids"]]
    raise HTTPException(404, f"no dead letter {entry_id!r} in batch {batch_id!r} (replayed already?)")


def _skipped_by_kind(state: ApiState, batch_id: str) -> tuple[dict[str, list[str]], dict[str, int], bool]:
    store = state.producer.store
    skipped = sorted(a for a, s in store.statuses(batch_id).items() if s == "skipped")
    capped = len(skipped) > SKIPPED_SCAN_MAX
    counts: Counter[str] = Counter()
    groups: dict[str, list[str]] = {}
    results_key = key("batch", batch_id, "results")
    page = 500
    for i in range(0, min(len(skipped), SKIPPED_SCAN_MAX), page):
        ids = skipped[i : i + page]
        raws: Any = store.r.hmget(results_key, ids)
        for asset_id, raw in zip(ids, raws, strict=True):
            kind = str(((json.loads(raw) if raw else {}).get("error") or {}).get("kind", "unknown"))
            counts[kind] += 1
            examples = groups.setdefault(kind, [])
            if len(examples) < EXAMPLES_PER_KIND:
                examples.append(asset_id)
    return groups, dict(counts), capped
