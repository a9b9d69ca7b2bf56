"""Small types every connector shares: the request it builds, the verdict it returns.

A connector's pure core turns a channel message into an :class:`HttpRequest` and a
provider's answer into a :class:`Verdict`; the agent acts on the verdict (mark
delivered, send to a retry tier, dead-letter). Connectors may not import
``streams``, so their errors have their own small root here, which the deliver
agent translates into the project's error tree:

    ConnectorError          a connector cannot act on a message
     └── InvalidMessage     the message cannot be sent as it is; retrying will not help
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ConnectorError(Exception):
    """Root of the errors a connector raises."""


class InvalidMessage(ConnectorError):
    """The message cannot be sent as it is (no address, bad URL, too large).

    Permanent: the same message fails the same way on every attempt, so it
    belongs in the dead-letter topic with this error's text as the reason.
    """


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REJECTED = "rejected"
    ADDRESS_INVALID = "address_invalid"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one delivery attempt came to, and what to do next."""

    outcome: Outcome
    reason: str = ""
    retry_after: float | None = None
    """Seconds the provider asked us to wait (Retry-After), when it said."""
    status_code: int | None = None

    @classmethod
    def delivered(cls, *, status_code: int | None = None) -> Verdict:
        return cls(Outcome.DELIVERED, status_code=status_code)

    @classmethod
    def retry(
        cls, reason: str, *, retry_after: float | None = None, status_code: int | None = None
    ) -> Verdict:
        return cls(Outcome.RETRY, reason, retry_after, status_code)

    @classmethod
    def rejected(cls, reason: str, *, status_code: int | None = None) -> Verdict:
        return cls(Outcome.REJECTED, reason, status_code=status_code)

    @classmethod
    def address_invalid(cls, reason: str, *, status_code: int | None = None) -> Verdict:
        return cls(Outcome.ADDRESS_INVALID, reason, status_code=status_code)


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One HTTP request, built by a connector's pure core and sent by the transport."""

    method: str
    url: str
    headers: dict[str, str]
    content: bytes
