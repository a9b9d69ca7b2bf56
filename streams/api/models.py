"""The API's request and response bodies (pydantic), which are also its OpenAPI schema.

`NotificationIn` is the NotificationRequest contract (schemas/notification_request.avsc)
minus what the API fills in itself: the tenant comes from the API key, the id from the
Idempotency-Key (streams/api/idempotency.py), `created_at` from the clock. Bounds mirror
streams/requests.py and Avro's `long`, so anything that passes here either passes
`validate_request` or is refused by it with a 422 — never a 500.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Channel = Literal["email", "sms", "push", "slack", "webhook"]
IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9._:@\-]{0,127}$"
# RFC 9110 field values are visible ASCII; keys longer than this are not keys but payloads.
IDEMPOTENCY_KEY = r"^[!-~]{1,255}$"
_LONG_MAX = 2**63 - 1
_TEXT_MAX = 64 * 1024


class _Strict(BaseModel):
    # strict: JSON `false` is not the number 0, nor "1" the number 1 — what the document says.
    model_config = ConfigDict(extra="forbid", strict=True)


class RecipientIn(_Strict):
    user_id: str = Field(pattern=IDENTIFIER, description="The tenant's own id for the user.")
    email: str | None = Field(None, max_length=320)
    phone: str | None = Field(None, max_length=32, description="E.164, e.g. +14155550100")
    push_tokens: list[str] = Field(default_factory=list, max_length=100)
    slack: str | None = Field(None, max_length=2048)
    webhook_url: str | None = Field(None, max_length=2048)
    locale: str | None = Field(None, max_length=64)
    timezone: str | None = Field(None, max_length=128)
    metadata: dict[str, str] = Field(default_factory=dict)


class TemplateRefIn(_Strict):
    template_id: str = Field(pattern=IDENTIFIER)
    version: int | None = Field(None, ge=0, le=2**31 - 1)


class NotificationIn(_Strict):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{
        "priority": "normal", "category": "orders", "channels": ["webhook"],
        "recipients": [{"user_id": "u1", "webhook_url": "https://example.com/hooks/orders"}],
        "title": "Order shipped", "content": "Your order 1 has shipped",
        "data": {"order_id": "1"},
    }]})

    priority: Literal["low", "normal", "high", "critical"] = "normal"
    category: str = Field("general", min_length=1, max_length=128)
    recipients: list[RecipientIn] = Field(min_length=1, max_length=1000)
    channels: list[Channel] = Field(min_length=1, max_length=5)
    fallback_channels: list[Channel] = Field(default_factory=list, max_length=5)
    template: TemplateRefIn | None = None
    title: str | None = Field(None, max_length=_TEXT_MAX)
    content: str | None = Field(None, max_length=_TEXT_MAX)
    data: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    send_at: int | None = Field(None, ge=0, le=_LONG_MAX,
                                description="Earliest send time, epoch milliseconds.")


class Accepted(BaseModel):
    notification_id: str
    status: Literal["accepted"] = "accepted"
    replayed: bool = Field(
        description="True when this Idempotency-Key was already accepted with this body.")
    links: dict[str, str]


class StatusOut(BaseModel):
    status: str
    channel: str | None
    delivery_id: str | None
    attempt: int
    reason: str | None
    status_code: int | None
    occurred_at: int = Field(description="Epoch milliseconds.")
    latency_ms: int | None
    details: dict[str, str]


class Timeline(BaseModel):
    notification_id: str
    state: str = Field(description="The latest status, or `submitted` before the first one.")
    timeline: list[StatusOut]


class Problem(BaseModel):
    """RFC 9457 problem details."""
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    field: str | None = Field(default=None, description="The offending request field, if one.")
    notification_id: str | None = None


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    ready: bool
    broker_reachable: bool
    partitions_assigned: int
    partitions_expected: int
    store_caught_up: bool
    error: str | None
