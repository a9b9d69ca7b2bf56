"""Tests for streams/api/idempotency.py: derived ids and the replay/conflict decision."""

from __future__ import annotations

import pytest

from streams.api.idempotency import (
    Conflict,
    Fresh,
    Replay,
    body_sha256,
    decide,
    notification_id_for,
)

WINDOW = 60_000


def test_body_hash_ignores_key_order_but_not_values():
    assert body_sha256({"a": 1, "b": [1, 2]}) == body_sha256({"b": [1, 2], "a": 1})
    assert body_sha256({"a": 1}) != body_sha256({"a": 2})
    assert body_sha256({"b": [1, 2]}) != body_sha256({"b": [2, 1]})


def test_the_id_depends_on_tenant_key_and_body():
    base = notification_id_for("acme", "k", "h")
    assert base == notification_id_for("acme", "k", "h")
    assert base.startswith("ntf_") and len(base) == 36
    others = {notification_id_for("globex", "k", "h"), notification_id_for("acme", "k2", "h"),
              notification_id_for("acme", "k", "h2"),
              # the separator keeps ("acme", "k\0h") apart from ("acme\0k", "h")
              notification_id_for("acme\0k", "h", "h")}
    assert base not in others and len(others) == 4


def seen(body_hash: str, at: int, notification_id: str = "ntf_first") -> dict:
    return {"body_sha256": body_hash, "notification_id": notification_id, "accepted_at": at}


@pytest.mark.parametrize(
    ("stored", "body_hash", "now", "expected"),
    [
        (None, "h", 1000, Fresh(notification_id_for("acme", "k", "h"))),
        (seen("h", 1000), "h", 2000, Replay("ntf_first")),
        (seen("h", 1000), "other", 2000, Conflict("ntf_first")),
        # an expired key is free again, whatever body it had
        (seen("h", 1000), "other", 1000 + WINDOW, Fresh(notification_id_for("acme", "k",
                                                                              "other"))),
        (seen("h", 1000), "h", 1000 + WINDOW, Fresh(notification_id_for("acme", "k", "h"))),
    ],
)
def test_decide(stored, body_hash, now, expected):
    assert decide(stored, tenant_id="acme", idempotency_key="k", body_hash=body_hash,
                  now_ms=now, window_ms=WINDOW) == expected
