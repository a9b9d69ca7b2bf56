"""Errors as RFC 9457 problem details (`application/problem+json`), one shape for every 4xx/5xx."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from streams.api.models import Problem

MEDIA_TYPE = "application/problem+json"
_TYPE_BASE = "https://tidings.dev/problems/"  # identifiers, not fetched (RFC 9457 §3.1.1)


class ApiProblem(Exception):
    def __init__(self, status: int, detail: str, *, kind: str | None = None,
                 field: str | None = None, notification_id: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.problem = Problem(
            type=_TYPE_BASE + kind if kind else "about:blank",
            title=HTTPStatus(status).phrase, status=status, detail=detail, field=field,
            notification_id=notification_id,
        )
        self.headers = headers


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(problem.model_dump(exclude_none=True), status_code=problem.status,
                        media_type=MEDIA_TYPE, headers=headers)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses, so clients (and schemathesis)
    know every error body's shape and media type."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {status: {"model": Problem, "description": HTTPStatus(status).phrase,
                     "content": {MEDIA_TYPE: {"schema": schema}}} for status in statuses}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def _ours(_: Request, exc: ApiProblem) -> JSONResponse:
        return problem_response(exc.problem, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors[:5]
        )
        return problem_response(Problem(
            type=_TYPE_BASE + "invalid-request", title=HTTPStatus(422).phrase, status=422,
            detail=detail or "invalid request", field=where or None,
        ))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(
            Problem(title=HTTPStatus(exc.status_code).phrase, status=exc.status_code,
                    detail=str(exc.detail)),
            dict(exc.headers) if exc.headers else None,
        )
