"""Render throughput per worker process, and what the sandbox refuses.

    .venv/bin/python tests/bench/render.py [--seconds 5] [--json tests/bench/results/render.json]

Renders the sample templates (deploy/local/templates) for recipients spread over the 15
locales, the way the dispatch stage does: `plan` in the worker, `run` in the render child
process (agents/render_process.py), one request at a time. Reported:

* renders/s through the child process (what a worker does; the child is one process, so
  this is the ceiling per worker), for email only (subject, text, HTML) and for all five
  channels in one render;
* renders/s inline (no process hop), to show what the isolation costs;
* every hostile payload of tests/unit/agents/test_sandbox.py plus the time-limit and
  memory cases, with how it ended and how long that took.

No broker is needed: Kafka's share of a worker's time is measured by tests/bench/run.py.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from agents import templating  # noqa: E402
from agents.l10n import SUPPORTED  # noqa: E402
from agents.render_process import (  # noqa: E402
    RenderFailed,
    RenderProcess,
    RenderTimeout,
    run_inline,
)
from streams.templates import version_record  # noqa: E402

DATA = {"name": "Ann", "product": "Acme", "code": "493021", "order_id": "A-1042",
        "total": "1234.5", "currency": "EUR", "eta": "2026-03-04",
        "expires_at": "2026-03-01T23:45:00Z", "device": "Firefox", "location": "Lyon",
        "at": "2026-03-01T23:30:00Z"}
ZONES = ["America/New_York", "Europe/Paris", "Asia/Tokyo", "Asia/Riyadh", "UTC"]
HOSTILE = {
    "'x' * 10**9": "{{ 'x' * 10**9 }}",
    "10 ** 10 ** 10": "{{ 10 ** 10 ** 10 }}",
    "__subclasses__ walk": "{{ ().__class__.__base__.__subclasses__() }}",
    "CVE-2016-10745 str.format": "{{ '{0.__class__.__mro__}'.format(1) }}",
    "CVE-2019-10906 format_map": "{{ '{x.__class__}'.format_map({'x': 1}) }}",
    "CVE-2024-56326 stored format": "{% set f = '{0.__class__}'.format %}{{ f(1) }}",
    "CVE-2025-27516 |attr('format')": "{{ ('{0.__class__}' | attr('format'))(1) }}",
    "printf padding '%999999999s'": "{{ '%999999999s' % 'x' }}",
    "'x'.center(10**9)": "{{ 'x'.center(10**9) }}",
    "range(10**9)": "{% for i in range(10**9) %}{% endfor %}",
    "include another file": "{% include 'other/secret' %}",
    "10^8-step nested loop": "{% for i in range(10000) %}{% for j in range(10000) %}"
                             "{% endfor %}{% endfor %}",
    "output flood (10^8 chars)": "{% for i in range(10000) %}{% for j in range(10000) %}x"
                                 "{% endfor %}{% endfor %}",
    "string doubling to 16 GiB": "{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}"
                                 "{% for i in range(30) %}{% set ns.s = ns.s ~ ns.s %}"
                                 "{% endfor %}{{ ns.s | length }}",
}


def _samples() -> list[dict[str, Any]]:
    paths = sorted((REPO / "deploy" / "local" / "templates").glob("*.yaml"))
    return [version_record("acme", yaml.safe_load(p.read_text()), version=1, occurred_at=0)
            for p in paths]


def _jobs(channels: list[str], count: int = 600) -> list[templating.RenderJob]:
    records, jobs = _samples(), []
    for i in range(count):
        request = {
            "tenant_id": "acme", "notification_id": f"n{i}", "category": "account",
            "priority": "normal", "created_at": 1772407800000, "data": DATA,
            "recipients": [{"user_id": f"u{i}", "locale": SUPPORTED[i % len(SUPPORTED)],
                            "timezone": ZONES[i % len(ZONES)], "metadata": {}}],
        }
        jobs.append(templating.plan(records[i % len(records)], request, channels)[1])
    return jobs


def _rate(render: Any, jobs: list[templating.RenderJob], seconds: float) -> dict[str, float]:
    for job in jobs[:60]:  # warm: compile caches, Babel's locale data
        render(job)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        render(jobs[done % len(jobs)])
        done += 1
    elapsed = time.perf_counter() - started
    return {"renders": done, "seconds": round(elapsed, 2),
            "renders_per_s": round(done / elapsed, 1)}


def _hostile(process: RenderProcess) -> list[dict[str, Any]]:
    rows = []
    for name, source in HOSTILE.items():
        document = {"template_id": "hostile", "locales": {"en": {"title": source}}}
        record = version_record("acme", document, version=1, occurred_at=0)
        request = {"tenant_id": "acme", "notification_id": "n", "category": "c",
                   "priority": "normal", "created_at": 0, "data": {},
                   "recipients": [{"user_id": "u", "locale": "en"}]}
        job = templating.plan(record, request, ["webhook"])[1]
        started = time.perf_counter()
        try:
            process.render_blocking(job)
            outcome = "RENDERED (not refused!)"
        except RenderFailed as exc:
            outcome = f"{exc.error_class}: {str(exc)[:70]}"
        except RenderTimeout:
            outcome = f"RenderTimeout: killed after {process.timeout_s:g}s, child restarted"
        rows.append({"payload": name, "outcome": outcome,
                     "ms": round((time.perf_counter() - started) * 1000)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()

    process = RenderProcess(timeout_s=2.0, max_memory_mb=1024)
    process.start()
    try:
        results: dict[str, Any] = {"python": platform.python_version(),
                                   "machine": platform.machine()}
        for label, channels in (("email", ["email"]),
                                ("all five channels", ["email", "sms", "push", "slack",
                                                       "webhook"])):
            jobs = _jobs(channels)
            results[f"process, {label}"] = _rate(process.render_blocking, jobs, args.seconds)
            results[f"inline, {label}"] = _rate(run_inline, jobs, args.seconds)
        results["refused"] = _hostile(process)
    finally:
        process.close()

    print("renders/s per worker process (one render child; sample templates, 15 locales)")
    for key, value in results.items():
        if isinstance(value, dict):
            print(f"  {key:28} {value['renders_per_s']:>8} /s   ({value['renders']} in "
                  f"{value['seconds']} s)")
    print("\nwhat the sandbox refuses (through the render child, 2 s limit, 1 GiB memory)")
    for row in results["refused"]:
        print(f"  {row['payload']:32} {row['ms']:>6} ms  {row['outcome']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
