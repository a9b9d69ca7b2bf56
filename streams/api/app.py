"""The HTTP API: `create_api(settings)` builds the ASGI app that `tidings api` serves.

A separate ASGI app rather than Faust's web server, because:
- FastAPI writes the OpenAPI document from the same pydantic models that validate requests
  (we use pydantic already), and schemathesis tests the app against that document;
- the API is stateless apart from a store it can rebuild from Kafka, so it scales by
  replicas (a Kubernetes Deployment) apart from the stateful, partition-owning workers (a
  StatefulSet); inside a worker it would share a process, and a rebalance, with the agents;
- a slow client or a burst of POSTs never competes with the agents' event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Annotated

from confluent_kafka import KafkaException
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from streams.api import idempotency
from streams.api.keys import KeyStore
from streams.api.materializer import Materializer
from streams.api.models import (
    IDEMPOTENCY_KEY,
    IDENTIFIER,
    Accepted,
    Health,
    NotificationIn,
    Ready,
    StatusOut,
    Timeline,
)
from streams.api.problems import ApiProblem, install, responses
from streams.api.publishing import ApiPublisher
from streams.api.store import StatusStore
from streams.errors import SerializationError, ValidationError
from streams.publisher import PublishError
from streams.requests import normalize_request, now_ms
from streams.settings import Settings

log = logging.getLogger("tidings.api")
_bearer = HTTPBearer(auto_error=False, description="A tenant's API key: `tdk_...`")


@dataclass
class ApiState:
    settings: Settings
    keys: KeyStore
    store: StatusStore
    materializer: Materializer
    publisher: ApiPublisher


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.tidings
    return state


def _tenant(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    tenant = _state(request).keys.tenant_for(credentials.credentials) if credentials else None
    if tenant is None:
        raise ApiProblem(401, "a valid API key is required: `Authorization: Bearer tdk_...`",
                         kind="unauthorized", headers={"WWW-Authenticate": "Bearer"})
    return tenant


Tenant = Annotated[str, Depends(_tenant)]
State = Annotated[ApiState, Depends(_state)]


def _router() -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/notifications", status_code=202, response_model=Accepted,
        responses={**responses(400, 401, 409, 422, 503), 202: {
            "description": "Accepted; `Location` names its timeline",
            # OpenAPI links: clients (and schemathesis' stateful phase) follow the id.
            "links": {"GetNotification": {
                "operationId": "get_notification",
                "parameters": {"notification_id": "$response.body#/notification_id"},
            }},
        }},
        summary="Accept a notification for delivery", operation_id="post_notification",
    )
    async def post_notification(
        body: NotificationIn, tenant: Tenant, state: State, response: Response,
        idempotency_key: Annotated[str | None, Header(
            alias="Idempotency-Key", pattern=IDEMPOTENCY_KEY,
            description="Same key and body: the same id again. Same key, other body: 409.",
        )] = None,
    ) -> Accepted:
        canonical = body.model_dump(mode="json")
        body_hash = idempotency.body_sha256(canonical)
        replayed = False
        if idempotency_key is None:
            notification_id = f"ntf_{uuid.uuid4().hex}"
        else:
            window_s = state.settings.api_idempotency_window_s or state.settings.dedup_window_s
            decision = idempotency.decide(
                state.store.idempotency(tenant, idempotency_key), tenant_id=tenant,
                idempotency_key=idempotency_key, body_hash=body_hash, now_ms=now_ms(),
                window_ms=int(window_s * 1000),
            )
            if isinstance(decision, idempotency.Conflict):
                raise ApiProblem(
                    409, "this Idempotency-Key was already used with a different body",
                    kind="idempotency-key-reused", notification_id=decision.notification_id,
                )
            notification_id = decision.notification_id
            replayed = isinstance(decision, idempotency.Replay)
        if not replayed:
            await _publish(state, tenant, notification_id, idempotency_key, body_hash,
                           canonical)
        location = f"/v1/notifications/{notification_id}"
        response.headers["Location"] = location
        return Accepted(notification_id=notification_id, replayed=replayed,
                        links={"self": location})

    @router.get(
        "/v1/notifications/{notification_id}", response_model=Timeline,
        responses=responses(401, 404, 422), summary="The status timeline of a notification",
        operation_id="get_notification",
    )
    async def get_notification(
        notification_id: Annotated[str, Path(pattern=IDENTIFIER)], tenant: Tenant, state: State,
    ) -> Timeline:
        # A status names its tenant; one written for another tenant under the same id (a
        # producer outside the API chose it) is never shown.
        statuses = [s for s in state.store.timeline(notification_id)
                    if s.get("tenant_id") == tenant]
        if not statuses and state.store.owner(notification_id) != tenant:
            # The same answer whether the id is unknown or another tenant's: existence of
            # another tenant's notification is not leaked.
            raise ApiProblem(404, f"no notification {notification_id}", kind="not-found")
        return Timeline(
            notification_id=notification_id,
            state=statuses[-1]["status"] if statuses else "submitted",
            timeline=[StatusOut.model_validate(s, from_attributes=False) for s in statuses],
        )

    @router.get("/health", response_model=Health, summary="The process is up",
                operation_id="health")
    async def health() -> Health:
        return Health()

    @router.get("/ready", response_model=Ready, responses={503: {"model": Ready}},
                summary="Broker reachable, partitions assigned, store caught up",
                operation_id="ready")
    async def ready(state: State) -> JSONResponse:
        readiness = state.materializer.readiness
        reachable = await state.materializer.broker_reachable()
        body = Ready(
            ready=bool(reachable and readiness.caught_up and readiness.expected
                       and readiness.assigned == readiness.expected),
            broker_reachable=reachable, partitions_assigned=readiness.assigned,
            partitions_expected=readiness.expected, store_caught_up=readiness.caught_up,
            error=readiness.error,
        )
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)

    return router


async def _publish(state: ApiState, tenant: str, notification_id: str,
                   idempotency_key: str | None, body_hash: str, canonical: dict[str, object]
                   ) -> None:
    try:
        request = normalize_request({
            **canonical, "tenant_id": tenant, "notification_id": notification_id,
            "idempotency_key": idempotency_key or notification_id,
        })
        await state.publisher.publish(request)
    except (ValidationError, SerializationError) as exc:
        raise ApiProblem(422, str(exc), kind="invalid-request",
                         field=getattr(exc, "field", None)) from exc
    except (PublishError, KafkaException, BufferError) as exc:
        # BufferError: the producer's local queue is full (the broker is slow or away).
        raise ApiProblem(503, f"the broker did not acknowledge the request, which may still "
                         f"be written; retry with the same Idempotency-Key: {exc}",
                         kind="publish-failed", headers={"Retry-After": "1"}) from exc
    # Recorded without a caller's key too (keyed by the id, as the pipeline's dedup does), so
    # every replica knows the owner at once, before the first status arrives.
    record = {"tenant_id": tenant, "idempotency_key": idempotency_key or notification_id,
              "body_sha256": body_hash, "notification_id": notification_id,
              "accepted_at": now_ms()}
    state.store.remember(record)
    state.publisher.record_idempotency(record)


def create_api(settings: Settings, *, extra_routers: Iterable[APIRouter] = ()) -> FastAPI:
    """The API app; `extra_routers` are mounted beside ours (e.g. one-click unsubscribe)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keys = KeyStore(settings.api_keys_file)
        if not len(keys):
            log.warning("no API keys in %s: every request will get 401 (create one with "
                        "`tidings api-keys create --tenant NAME`)", settings.api_keys_file)
        store = StatusStore(settings.api_data_dir)
        materializer = Materializer(settings, store)
        state = ApiState(settings, keys, store, materializer,
                         ApiPublisher(settings))
        app.state.tidings = state
        task = asyncio.create_task(materializer.run(), name="tidings-api-materializer")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            state.publisher.close()
            store.close()

    app = FastAPI(
        title="Tidings", version="1", lifespan=lifespan,
        description="Multi-tenant notifications: accept a notification, follow its timeline.",
    )
    install(app)
    app.include_router(_router())
    for router in extra_routers:
        app.include_router(router)
    return app
