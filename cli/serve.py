"""``assetq serve``: the HTTP API (``/v1``), Immich's machine-learning endpoint (``/ping``, ``/predict``)
and the operator page (``/ui``), in ``producer/api/``.

A producer: it loads no model but the CLIP text towers, and those only when the server starts.
"""

from __future__ import annotations

import argparse
import sys

from cli.common import EXIT_ERROR, EXIT_OK, Subcommands


def cmd_serve(a: argparse.Namespace) -> int:
    from producer.api.server import NoTokenConfigured, serve

    try:
        serve(host=a.host, port=a.port, workers=a.workers, auth=not a.no_auth)
    except NoTokenConfigured as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def register(sub: Subcommands) -> None:
    s = sub.add_parser("serve", help="HTTP API, Immich's machine-learning endpoint and the operator page")
    s.add_argument("--host", default=None, help="address to listen on (ASSETQ_API_HOST, default 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (ASSETQ_API_PORT, default 3003, Immich's)")
    s.add_argument("--workers", type=int, default=None, help="server processes (ASSETQ_API_WORKERS)")
    s.add_argument("--no-auth", action="store_true", help="allow starting without ASSETQ_API_TOKENS")
    s.set_defaults(fn=cmd_serve)
