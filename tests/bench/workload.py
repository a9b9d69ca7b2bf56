"""What the benchmarks send: realistic NotificationRequests and the ChannelMessages routed
from them.

A request is one recipient on the webhook channel, from one of many tenants and users, with
the fields a real producer fills (title, content, data, metadata, email, locale); encoded it
is about 500 bytes, the record size the raw ceilings are measured with.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

from agents.route import channel_messages, fan_out
from streams.requests import normalize_request
from streams.serde import serde

TENANTS = 200
USERS_PER_TENANT = 5000
CATEGORIES = ("orders", "billing", "security", "shipping", "marketing")
PRIORITIES = ("low", "normal", "normal", "normal", "high")  # never critical: limits apply


def requests(
    count: int, webhook_base: str, *, seed: int = 1, tenant_prefix: str = "tenant"
) -> Iterator[dict[str, Any]]:
    """`count` requests as a producer would hand them to the publisher (not normalized)."""
    rng = random.Random(seed)
    for i in range(count):
        tenant = f"{tenant_prefix}-{rng.randrange(TENANTS):04d}"
        user = f"user-{rng.randrange(USERS_PER_TENANT):06d}"
        yield {
            "tenant_id": tenant,
            "idempotency_key": f"order-{_hex(rng)}",
            "priority": rng.choice(PRIORITIES),
            "category": rng.choice(CATEGORIES),
            "channels": ["webhook"],
            "recipients": [{
                "user_id": user,
                "webhook_url": f"{webhook_base}/hooks/{tenant}",
                "email": f"{user}@example.com",
                "locale": "en-GB",
                "timezone": "Europe/London",
            }],
            "title": f"Order {i} has shipped",
            "content": f"Your order {i} with 3 items left our warehouse today and should "
                       "arrive within 2 business days.",
            "data": {"order_id": str(i), "amount": "129.90", "currency": "EUR",
                     "carrier": "DHL", "tracking": _hex(rng)[:16]},
            "metadata": {"trace_id": _hex(rng), "source": "orders-service"},
        }


def channel_message_records(
    count: int, webhook_base: str, *, seed: int = 2
) -> Iterator[tuple[bytes, bytes]]:
    """(key, encoded ChannelMessage) pairs, routed the way the dispatch stage routes them."""
    encode = serde("ChannelMessage").encode
    for raw in requests(count, webhook_base, seed=seed):
        for key, single in fan_out(normalize_request(raw)):
            for message in channel_messages(single):
                yield key, encode(message)


def mean_encoded_size(webhook_base: str, sample: int = 200) -> float:
    encode = serde("NotificationRequest").encode
    sizes = [len(encode(normalize_request(r))) for r in requests(sample, webhook_base)]
    return sum(sizes) / len(sizes)


def _hex(rng: random.Random) -> str:
    return uuid.UUID(int=rng.getrandbits(128)).hex
