"""Tidings' Avro contracts: one record per ``*.avsc`` file; ``fixtures/`` holds evolution fixtures.

This package is data; the code that parses it lives in ``streams.serde``.
"""

from pathlib import Path

__all__ = ["SCHEMA_DIR", "schema_path"]

SCHEMA_DIR = Path(__file__).resolve().parent


def schema_path(name: str) -> Path:
    """Path of a schema file, e.g. ``"recipient"`` or ``"fixtures/notification_request_v2"``."""
    return SCHEMA_DIR / (name if name.endswith(".avsc") else f"{name}.avsc")
