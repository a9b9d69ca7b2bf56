"""A/B assignment (agents/ab.py): the split follows the weights and never changes."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.ab import Variant, assign, bucket

REPO = Path(__file__).resolve().parents[3]
USERS = [f"user-{i}" for i in range(10_000)]


@pytest.mark.parametrize("weights", [(50, 50), (70, 20, 10), (0.9, 0.1), (1, 1, 1, 1)])
def test_split_is_within_two_percent_of_the_weights(weights: tuple[float, ...]) -> None:
    variants = [Variant(f"v{i}", w) for i, w in enumerate(weights)]
    counts = collections.Counter(assign("exp-1", "acme", user, variants).name for user in USERS)
    total = sum(weights)
    for variant in variants:
        share = counts[variant.name] / len(USERS)
        assert abs(share - variant.weight / total) < 0.02, (variant, share)


def test_a_zero_weight_variant_gets_nobody() -> None:
    variants = [Variant("on", 1), Variant("off", 0)]
    assert {assign("exp-1", "acme", user, variants).name for user in USERS[:2000]} == {"on"}


def test_another_experiment_reshuffles_the_recipients() -> None:
    variants = [Variant("a", 1), Variant("b", 1)]
    first = [assign("exp-1", "acme", user, variants).name for user in USERS[:2000]]
    second = [assign("exp-2", "acme", user, variants).name for user in USERS[:2000]]
    same = sum(x == y for x, y in zip(first, second, strict=True)) / len(first)
    assert 0.4 < same < 0.6  # independent: about half agree by chance


def test_the_same_recipient_in_another_tenant_is_another_recipient() -> None:
    assert bucket("exp-1", "acme", "u1") != bucket("exp-1", "globex", "u1")


_CHILD = """
from agents.ab import Variant, assign
variants = [Variant("a", 50), Variant("b", 30), Variant("c", 20)]
print("".join(assign("exp-1", "acme", f"user-{i}", variants).name for i in range(2000)))
"""


def test_assignment_is_stable_across_processes_and_hash_seeds() -> None:
    # Python's hash() changes with PYTHONHASHSEED; the assignment must not.
    runs = {
        subprocess.run([sys.executable, "-c", _CHILD], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}, check=True).stdout
        for seed in ("0", "1", "12345")
    }
    variants = [Variant("a", 50), Variant("b", 30), Variant("c", 20)]
    here = "".join(assign("exp-1", "acme", f"user-{i}", variants).name for i in range(2000))
    assert runs == {here + "\n"}
