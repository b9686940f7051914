"""Bearer tokens: ``Authorization: Bearer <token>`` checked against ``ASSETQ_API_TOKENS``.

The operator page also takes the token from a cookie that its login form sets
(a browser cannot add a bearer header to a page it navigates to). The cookie is
``HttpOnly`` and ``SameSite=Strict``, so another site cannot make the browser
send it along with a form that presses the replay button.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from fastapi import HTTPException, Request

COOKIE = "assetq_token"


class TokenCheck:
    """Which requests carry an accepted token; ``enabled=False`` (``--no-auth``) lets every request through."""

    def __init__(self, tokens: Iterable[str], enabled: bool = True) -> None:
        self._tokens = [t.encode() for t in tokens if t]
        self.enabled = enabled

    def accepts(self, token: str | None) -> bool:
        if not self.enabled:
            return True
        if not token:
            return False
        given = token.encode()
        # Compare against every token, in constant time each: the answer's timing says nothing about them.
        return any([hmac.compare_digest(given, t) for t in self._tokens])

    def allows(self, request: Request, cookie: bool = False) -> bool:
        return self.accepts(bearer(request) or (request.cookies.get(COOKIE) if cookie else None))

    def require(self, request: Request) -> None:
        if not self.allows(request):
            raise HTTPException(
                401, "a bearer token is required: Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"}
            )


def bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
