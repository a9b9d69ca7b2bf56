"""De-duplication by idempotency key within a time window.

The table maps `tenant/idempotency_key` to the first request that used it (its notification
id and when it was seen). A second request with the same key inside the window is a
duplicate; the *same* request read again (a replay, or reprocessing after a crash before the
offset commit) is not, because it carries the same notification id: it passes on, and the
delivered ledger stops it from being sent twice. Keys older than the window are treated as
absent and overwritten, which is how they expire.

Requests are keyed `tenant/first recipient` (streams/topics.py), so every request with the
same idempotency key from the same caller lands on one partition and this check is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class DedupWindow:
    window_ms: int

    @staticmethod
    def key(tenant_id: str, idempotency_key: str) -> str:
        return f"{tenant_id}/{idempotency_key}"

    def is_duplicate(self, seen: Any, notification_id: str, now_ms: int) -> bool:
        """`seen` is the table's entry (`[notification_id, seen_at_ms]`) or None."""
        if not seen:
            return False
        first_id, seen_at = seen
        if now_ms - int(seen_at) >= self.window_ms:
            return False
        return bool(first_id != notification_id)

    @staticmethod
    def entry(notification_id: str, now_ms: int) -> list[Any]:
        return [notification_id, now_ms]

    def remember(self, seen: Any, notification_id: str, now_ms: int) -> list[Any]:
        """The entry to store for a request that passed: a request read again (a replay)
        keeps its key's first sighting, so reprocessing never stretches the window."""
        if seen and seen[0] == notification_id and now_ms - int(seen[1]) < self.window_ms:
            return list(seen)
        return self.entry(notification_id, now_ms)
