"""Where a range of a topic starts and ends: a time or an offset, as an operator types it.

    2026-12-01T21:00:00Z      an ISO 8601 time; a time zone is required (Z or ±hh:mm)
    @1764622800000            epoch milliseconds (as in DeliveryStatus.occurred_at)
    -15m  -2h  -30s  -1d      that long before now
    now                       this moment
    1234                      an offset, the same in every partition read
    earliest  latest          the log start offset / the high watermark of each partition

A time becomes an offset per partition with Kafka's ListOffsets by timestamp (KIP-79,
`offsets_for_times`): the first record whose timestamp is at or after it. Ranges are
half-open, like Python's: `--from` is included and `--to` is not, so two adjacent replays
`--from A --to B` and `--from B --to C` never send a record twice.

Pure: no Kafka here; `streams/ranges.py` asks the broker and calls `partition_range`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from streams.errors import TidingsError

BoundKind = Literal["offset", "time", "earliest", "latest"]

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhd])$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class BoundError(TidingsError):
    """A time or offset that cannot be read, or a range that ends before it starts."""


@dataclass(frozen=True, slots=True)
class Bound:
    kind: BoundKind
    value: int = 0
    """The offset, or the time in epoch milliseconds; 0 for earliest/latest."""
    text: str = ""

    def describe(self) -> str:
        if self.kind == "time":
            return datetime.fromtimestamp(self.value / 1000, tz=UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z")
        if self.kind == "offset":
            return f"offset {self.value}"
        return self.kind


def parse_bound(text: str, *, now_ms: int, option: str = "bound") -> Bound:
    """Read one `--from`/`--to` value; raise `BoundError` naming the option when it is bad."""
    raw = text.strip()
    if raw in ("earliest", "latest"):
        return Bound(raw, 0, raw)  # type: ignore[arg-type]
    if raw == "now":
        return Bound("time", now_ms, raw)
    if raw.isdigit():
        return Bound("offset", int(raw), raw)
    if raw.startswith("@") and raw[1:].isdigit():
        return Bound("time", int(raw[1:]), raw)
    relative = _RELATIVE.match(raw)
    if relative:
        amount, unit = relative.groups()
        return Bound("time", now_ms - int(float(amount) * _UNIT_MS[unit]), raw)
    return Bound("time", parse_time(raw, option=option), raw)


def parse_time(text: str, *, option: str = "time") -> int:
    """An ISO 8601 time with a time zone, as epoch milliseconds."""
    try:
        # Python 3.11's fromisoformat reads the ISO 8601 forms an operator types, `Z` included.
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BoundError(
            f"{option}: {text!r} is not a time or an offset; give an ISO 8601 time with a "
            "zone (2026-12-01T21:00:00Z), @<epoch ms>, a span back from now (-15m, -2h, -1d), "
            "now, an offset (1234), earliest or latest"
        ) from None
    if moment.tzinfo is None:
        # A replay of the wrong hour is costly; the machine's zone is not a safe guess.
        raise BoundError(f"{option}: {text!r} has no time zone; add Z for UTC or ±hh:mm")
    return int(moment.timestamp() * 1000)


def check_order(start: Bound, end: Bound) -> None:
    """Refuse a range that ends before it starts, where that is known before asking Kafka.

    Offsets compare with offsets and times with times; `latest` as the start or `earliest`
    as the end leaves nothing to read. A time against an offset is only comparable per
    partition, once the time is resolved (`partition_range` then gives an empty range).
    """
    if start.kind == end.kind and start.kind in ("offset", "time") and start.value > end.value:
        raise BoundError(f"--from ({start.text}) is after --to ({end.text})")
    if start.kind == "latest" and end.kind != "latest":
        raise BoundError("--from latest leaves nothing to read before --to")
    if end.kind == "earliest":
        raise BoundError("--to earliest leaves nothing to read (--to is not included)")


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """Offsets `start` (included) to `end` (not included) of one partition."""

    partition: int
    start: int
    end: int

    @property
    def count(self) -> int:
        """Records in the range at most (compaction and transaction markers leave gaps)."""
        return max(0, self.end - self.start)


def resolve(bound: Bound, *, low: int, high: int, offset_for_time: int | None) -> int:
    """One bound as an offset of a partition whose log runs from `low` to `high`.

    `offset_for_time` is the broker's answer for a time bound: the first offset with a
    timestamp at or after it, or None (or a negative offset) when no record is that late.
    """
    if bound.kind == "earliest":
        return low
    if bound.kind == "latest":
        return high
    if bound.kind == "offset":
        return min(max(bound.value, low), high)
    if offset_for_time is None or offset_for_time < 0:
        return high
    return min(max(offset_for_time, low), high)


def partition_range(partition: int, start: Bound, end: Bound, *, low: int, high: int,
                    start_for_time: int | None = None, end_for_time: int | None = None
                    ) -> PartitionRange:
    first = resolve(start, low=low, high=high, offset_for_time=start_for_time)
    last = resolve(end, low=low, high=high, offset_for_time=end_for_time)
    return PartitionRange(partition, first, max(first, last))
