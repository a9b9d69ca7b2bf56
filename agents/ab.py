"""A/B tests: which variant of a template a recipient gets.

Assignment is a pure function of the experiment id and the recipient (tenant + user id):
SHA-256 of both, read as a number in [0, 1), placed on the cumulative weights. The same
recipient always gets the same variant of the same experiment — on a replay, on another
worker, after a restart — and a new experiment id reshuffles everyone. (Python's `hash()`
is salted per process, PYTHONHASHSEED, so it cannot be used.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

_SCALE = float(1 << 64)


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    weight: float


def bucket(experiment_id: str, tenant_id: str, user_id: str) -> float:
    """A stable number in [0, 1) for this recipient in this experiment."""
    digest = hashlib.sha256(f"{experiment_id}\x1f{tenant_id}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def assign(experiment_id: str, tenant_id: str, user_id: str, variants: Sequence[Variant]
           ) -> Variant:
    """The variant for a recipient: the first whose cumulative weight share passes its bucket.

    Weights are relative (50/50, 1/3, 0.9/0.1); a weight of 0 switches a variant off.
    """
    live = [v for v in variants if v.weight > 0]
    if not live:
        raise ValueError("an experiment needs a variant with a positive weight")
    total = sum(v.weight for v in live)
    point = bucket(experiment_id, tenant_id, user_id) * total
    cumulative = 0.0
    for variant in live:
        cumulative += variant.weight
        if point < cumulative:
            return variant
    return live[-1]  # float rounding at the very top
