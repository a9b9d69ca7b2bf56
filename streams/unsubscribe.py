"""One-click unsubscribe (RFC 8058): signed, expiring tokens and the HTTP endpoint.

Every email whose category a user may leave carries a token in its List-Unsubscribe URL
(`TIDINGS_EMAIL_UNSUBSCRIBE_URL` with a `{token}` placeholder); an email of a required category
(security) carries no List-Unsubscribe at all. The token is an itsdangerous
`URLSafeTimedSerializer` signature (HMAC-SHA1 over the payload and a timestamp, keyed with
`TIDINGS_UNSUBSCRIBE_SECRET` and a salt naming this use) of `[tenant, user, category]`: it
cannot be forged or altered without the key, and it expires `TIDINGS_UNSUBSCRIBE_TOKEN_TTL_S`
after the email was sent.

    POST /v1/unsubscribe?token=...   the one-click request a mail client sends (body
                                     `List-Unsubscribe=One-Click`, RFC 8058 §3.2): verifies the
                                     token and publishes an opt-out of the email's category
    GET  /v1/unsubscribe?token=...   a confirmation page with a button that POSTs; a GET never
                                     unsubscribes, because link scanners follow GETs
                                     (RFC 8058 §1)

`unsubscribe_router(settings)` returns a FastAPI `APIRouter` to mount in the HTTP API.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Collection, Mapping
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from streams.errors import ConfigError, TidingsError, ValidationError
from streams.settings import Settings

__all__ = ["InvalidToken", "TokenExpired", "UnsubscribeTokens", "unsubscribe_router"]

_SALT = "tidings.unsubscribe.v1"


class InvalidToken(TidingsError):
    """The token was not signed with our key, or was altered."""


class TokenExpired(InvalidToken):
    """The token is genuine but older than the allowed age."""


class UnsubscribeTokens:
    def __init__(self, secret: str, ttl_s: int) -> None:
        if len(secret) < 16:
            raise ConfigError("TIDINGS_UNSUBSCRIBE_SECRET must be at least 16 characters")
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)
        self.ttl_s = ttl_s

    @classmethod
    def from_settings(cls, settings: Settings) -> UnsubscribeTokens:
        if settings.unsubscribe_secret is None:
            raise ConfigError("TIDINGS_UNSUBSCRIBE_SECRET is not set; it signs the one-click "
                              "unsubscribe tokens")
        return cls(settings.unsubscribe_secret.get_secret_value(),
                   settings.unsubscribe_token_ttl_s)

    def sign(self, tenant_id: str, user_id: str, category: str) -> str:
        return str(self._serializer.dumps([tenant_id, user_id, category]))

    def verify(self, token: str, *, now: float | None = None) -> tuple[str, str, str]:
        """(tenant, user, category) of a genuine, unexpired token."""
        try:
            if now is None:
                payload = self._serializer.loads(token, max_age=self.ttl_s)
            else:
                # The age check compares with the clock; tests pass their own.
                payload, signed_at = self._serializer.loads(token, return_timestamp=True)
                if now - signed_at.timestamp() > self.ttl_s:
                    raise SignatureExpired("token expired")
        except SignatureExpired as exc:
            raise TokenExpired("the unsubscribe link has expired") from exc
        except BadSignature as exc:
            raise InvalidToken("the unsubscribe link is not valid") from exc
        if (not isinstance(payload, list) or len(payload) != 3
                or not all(isinstance(p, str) for p in payload)):
            raise InvalidToken("the unsubscribe link is not valid")
        return payload[0], payload[1], payload[2]

    def signer(self, required_categories: Collection[str] = ()
               ) -> Callable[[Mapping[str, Any]], str | None]:
        """What the email connector calls for each message's `{token}`; None (no
        List-Unsubscribe at all) for a category users cannot leave."""
        def token_for(message: Mapping[str, Any]) -> str | None:
            if message["category"] in required_categories:
                return None
            return self.sign(message["tenant_id"], message["recipient"]["user_id"],
                             message["category"])
        return token_for


Publish = Callable[[str, str, str], None]  # (tenant, user, category) -> opt out


def _publisher(settings: Settings) -> Publish:
    from streams.preferences import PreferencesClient

    client = PreferencesClient(settings)

    def publish(tenant_id: str, user_id: str, category: str) -> None:
        client.change(tenant_id, user_id, [("opt_out_category", category)],
                      source="unsubscribe")

    return publish


_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1><p>{text}</p>{form}</body></html>
"""


def unsubscribe_router(settings: Settings, publish: Publish | None = None) -> APIRouter:
    """The endpoint as a router; `publish` defaults to a `PreferencesClient` change."""
    tokens = UnsubscribeTokens.from_settings(settings)
    required = frozenset(settings.preferences_required_categories)
    opt_out = publish or _publisher(settings)
    router = APIRouter(prefix="/v1", tags=["preferences"])

    def check(token: str) -> tuple[str, str, str]:
        try:
            tenant_id, user_id, category = tokens.verify(token)
        except TokenExpired as exc:
            raise HTTPException(status_code=410, detail=str(exc)) from exc
        except InvalidToken as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        if category in required:
            raise HTTPException(status_code=409, detail=f"{category} messages cannot be "
                                "unsubscribed from")
        return tenant_id, user_id, category

    @router.get("/unsubscribe", response_class=HTMLResponse)
    def confirm(token: str = Query(max_length=2048)) -> HTMLResponse:
        _, _, category = check(token)
        form = ('<form method="post"><input type="hidden" name="List-Unsubscribe" '
                'value="One-Click"><button type="submit">Unsubscribe</button></form>')
        return HTMLResponse(_PAGE.format(
            title="Unsubscribe",
            text=f"Stop receiving {html.escape(category)} emails?", form=form))

    @router.post("/unsubscribe")
    async def unsubscribe(token: str = Query(max_length=2048)) -> JSONResponse:
        tenant_id, user_id, category = check(token)
        try:
            # The publish waits for the broker's ack: off the event loop.
            await run_in_threadpool(opt_out, tenant_id, user_id, category)
        except ValidationError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        except TidingsError as exc:
            raise HTTPException(status_code=503, detail="could not record the change; "
                                "try again") from exc
        return JSONResponse({"unsubscribed": True, "category": category})

    return router
