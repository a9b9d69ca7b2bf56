"""The HTTP API (FastAPI): `create_api(settings)`; `tidings api` serves it."""

from streams.api.app import create_api

__all__ = ["create_api"]
