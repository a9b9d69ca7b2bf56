"""Tests for streams/api/app.py that need no broker: the document and the mounted routers."""

from __future__ import annotations

from fastapi import APIRouter

from streams.api import create_api
from streams.settings import Settings


def test_extra_routers_are_mounted_beside_ours() -> None:
    router = APIRouter()

    @router.get("/v1/unsubscribe")
    async def unsubscribe() -> dict[str, str]:
        return {"status": "ok"}

    paths = create_api(Settings(), extra_routers=[router]).openapi()["paths"]
    assert set(paths) == {"/v1/notifications", "/v1/notifications/{notification_id}",
                          "/health", "/ready", "/v1/unsubscribe"}


def test_the_document_says_how_to_authenticate_and_what_errors_look_like() -> None:
    document = create_api(Settings()).openapi()
    post = document["paths"]["/v1/notifications"]["post"]
    assert post["security"] == [{"HTTPBearer": []}]
    assert set(post["responses"]) == {"202", "400", "401", "409", "422", "503"}
    assert "application/problem+json" in post["responses"]["409"]["content"]
    header = [p for p in post["parameters"] if p["name"] == "Idempotency-Key"]
    assert header and header[0]["in"] == "header" and not header[0]["required"]
    # The link that lets a client (and schemathesis) follow a POST to its timeline.
    link = post["responses"]["202"]["links"]["GetNotification"]
    assert link["operationId"] == "get_notification"
    # Bodies are strict: no field the API does not know, and the tenant is not one of them.
    body = document["components"]["schemas"]["NotificationIn"]
    assert body["additionalProperties"] is False and "tenant_id" not in body["properties"]
