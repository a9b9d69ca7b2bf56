"""Labelled data under tests/data, read once."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parents[3] / "data"


def labelled(name: str) -> list[tuple[str, str]]:
    """(label, text) rows of a tests/data TSV file, comments skipped."""
    rows = []
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            label, text = line.split("\t", 1)
            rows.append((label, text))
    return rows
