"""Errors raised by Tidings code.

Every error we raise derives from ``TidingsError``; a library's exception is
translated at the boundary with ``raise OurError(...) from exc`` so that agents
catch ours only. The tree::

    TidingsError
     ├── SerializationError    bytes that do not decode, or a record that does not encode
     ├── ValidationError       a decoded record that breaks a rule of ours (.field names it)
     ├── ConfigError           settings or schemas that cannot be used; raised at start-up
     └── DeliveryError         a connector's failed send (.retriable says whether to retry)
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DeliveryError",
    "SerializationError",
    "TidingsError",
    "ValidationError",
]


class TidingsError(Exception):
    """Root of every error Tidings raises."""


class SerializationError(TidingsError):
    """A record does not fit its Avro schema, or bytes are not a record we can read."""


class ValidationError(TidingsError):
    """A well-formed record breaks a rule of ours; ``field`` names the offending field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConfigError(TidingsError):
    """Configuration or a schema file cannot be used."""


class DeliveryError(TidingsError):
    """A send to a provider failed; ``retriable`` says whether another attempt may succeed.

    Like ``aiokafka.errors``, retry is a property of the error: a subclass sets the
    class attribute, and a single instance may override it.
    """

    retriable: bool = False

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable
