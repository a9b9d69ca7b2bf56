"""Tests for streams/unsubscribe.py: tokens (sign, verify, expiry, tampering) and the
endpoint, served by uvicorn on an ephemeral port with a recording publish function."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from streams.errors import ConfigError, TidingsError
from streams.settings import load_settings
from streams.unsubscribe import InvalidToken, TokenExpired, UnsubscribeTokens, unsubscribe_router

SECRET = "unit-test-unsubscribe-secret-0123"


def test_a_token_round_trips() -> None:
    tokens = UnsubscribeTokens(SECRET, ttl_s=3600)
    token = tokens.sign("acme", "u1", "marketing")
    assert tokens.verify(token) == ("acme", "u1", "marketing")
    # URL-safe: it goes into a query string as it is.
    assert all(c.isalnum() or c in "-_." for c in token)


def test_a_token_expires() -> None:
    tokens = UnsubscribeTokens(SECRET, ttl_s=60)
    token = tokens.sign("acme", "u1", "marketing")
    assert tokens.verify(token, now=time.time() + 59) == ("acme", "u1", "marketing")
    with pytest.raises(TokenExpired):
        tokens.verify(token, now=time.time() + 120)


@pytest.mark.parametrize("position", [0, 10, 40, -1])
def test_a_tampered_token_is_refused(position: int) -> None:
    tokens = UnsubscribeTokens(SECRET, ttl_s=3600)
    token = tokens.sign("acme", "u1", "marketing")
    # Flip the character's top bit: a base64 character's low bits can be padding (the last
    # character of a 32-byte signature carries 4 bits), where a change decodes the same.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    char = token[position]
    flipped = alphabet[alphabet.index(char) ^ 0b100000] if char in alphabet else "A"
    tampered = token[:position] + flipped + token[position + 1:] if position != -1 \
        else token[:-1] + flipped
    with pytest.raises(InvalidToken):
        tokens.verify(tampered)


def test_a_token_signed_with_another_key_or_salt_is_refused() -> None:
    other = UnsubscribeTokens("another-secret-of-enough-length", ttl_s=3600)
    with pytest.raises(InvalidToken):
        UnsubscribeTokens(SECRET, ttl_s=3600).verify(other.sign("acme", "u1", "marketing"))
    with pytest.raises(InvalidToken):
        UnsubscribeTokens(SECRET, ttl_s=3600).verify("not-a-token")


def test_a_short_or_missing_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        UnsubscribeTokens("short", ttl_s=60)
    with pytest.raises(ConfigError):
        UnsubscribeTokens.from_settings(load_settings(unsubscribe_secret=None))


def test_the_signer_reads_tenant_user_and_category_of_a_message() -> None:
    tokens = UnsubscribeTokens(SECRET, ttl_s=3600)
    signer = tokens.signer(("security",))
    token = signer({"tenant_id": "acme", "category": "orders", "recipient": {"user_id": "ann"}})
    assert token is not None and tokens.verify(token) == ("acme", "ann", "orders")
    # A required category gets no token, hence no List-Unsubscribe header.
    assert signer({"tenant_id": "acme", "category": "security",
                   "recipient": {"user_id": "ann"}}) is None


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.fail = False

    def __call__(self, tenant_id: str, user_id: str, category: str) -> None:
        if self.fail:
            raise TidingsError("broker down")
        self.calls.append((tenant_id, user_id, category))


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Recorder, UnsubscribeTokens]]:
    settings = load_settings(unsubscribe_secret=SECRET, unsubscribe_token_ttl_s=60)
    recorder = Recorder()
    app = FastAPI()
    app.include_router(unsubscribe_router(settings, publish=recorder))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1/unsubscribe", recorder, UnsubscribeTokens(SECRET, 60)
    server.should_exit = True
    await task


ONE_CLICK: dict[str, Any] = {"content": "List-Unsubscribe=One-Click",
                             "headers": {"content-type": "application/x-www-form-urlencoded"}}


async def test_get_confirms_without_unsubscribing_and_post_unsubscribes(served) -> None:
    url, recorder, tokens = served
    token = tokens.sign("acme", "u1", "marketing")
    async with httpx.AsyncClient() as client:
        page = await client.get(url, params={"token": token})
        assert page.status_code == 200 and "marketing" in page.text
        assert 'method="post"' in page.text
        assert recorder.calls == []
        answer = await client.post(url, params={"token": token}, **ONE_CLICK)
    assert answer.status_code == 200
    assert answer.json() == {"unsubscribed": True, "category": "marketing"}
    assert recorder.calls == [("acme", "u1", "marketing")]


async def test_refusals(served) -> None:
    url, recorder, tokens = served
    good = tokens.sign("acme", "u1", "marketing")
    async with httpx.AsyncClient() as client:
        tampered = await client.post(url, params={"token": good[:-2] + "xx"}, **ONE_CLICK)
        missing = await client.post(url, **ONE_CLICK)
        required = await client.post(
            url, params={"token": tokens.sign("acme", "u1", "security")}, **ONE_CLICK)
        recorder.fail = True
        unavailable = await client.post(url, params={"token": good}, **ONE_CLICK)
    assert tampered.status_code == 400
    assert missing.status_code == 422
    assert required.status_code == 409
    assert unavailable.status_code == 503
    assert recorder.calls == []


async def test_an_expired_link_is_gone(served, monkeypatch) -> None:
    url, recorder, tokens = served
    token = tokens.sign("acme", "u1", "marketing")
    # itsdangerous reads the clock through its signer's get_timestamp: move it forward.
    import itsdangerous.timed

    monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp",
                        lambda self: int(time.time()) + 3600)
    async with httpx.AsyncClient() as client:
        answer = await client.post(url, params={"token": token}, **ONE_CLICK)
    assert answer.status_code == 410 and recorder.calls == []
