"""Rule evaluation and preference decisions per second on one core, without Kafka.

    .venv/bin/python tests/bench/rules.py [--rules 20] [--events 5000]

A tenant with `--rules` rules on one event type (a typical condition each, half of them
firing), `--events` events through `RuleBook.evaluate` (conditions + request building +
request validation), then the same number of preference decisions with quiet hours in a
time zone. Prints the rates; the numbers in the README come from this script.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from agents.preference_policy import decide  # noqa: E402
from agents.rule_eval import RuleBook  # noqa: E402
from streams.preferences import empty_state  # noqa: E402
from streams.rules import normalize_rule  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", type=int, default=20)
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()

    book = RuleBook()
    started = time.perf_counter()
    for i in range(args.rules):
        book.put(normalize_rule({
            "tenant_id": "acme", "rule_id": f"r{i:03}", "event_type": "order.shipped",
            "condition": f'int(payload.total) >= {100 * (i % 2)} && '
                         f'payload.country in ["FR", "DE"] && has(payload.email)',
            "recipients": [{"user_id": "payload.customer", "email": "payload.email"}],
            "channels": ["email"], "title": "Order ${order_id}", "content": "Total ${total}",
        }))
    compile_s = time.perf_counter() - started
    events = [{"event_id": f"evt-{n}", "tenant_id": "acme", "event_type": "order.shipped",
               "subject_id": f"order-{n}", "occurred_at": 0, "metadata": {},
               "payload": {"order_id": str(n), "total": "50", "country": "FR",
                           "customer": f"u{n}", "email": f"u{n}@example.com"}}
              for n in range(args.events)]
    started = time.perf_counter()
    made = sum(len(book.evaluate(event, 1).requests) for event in events)
    elapsed = time.perf_counter() - started
    conditions = args.events * args.rules
    print(f"{args.rules} rules compiled in {compile_s * 1000:.1f} ms")
    print(f"{args.events} events x {args.rules} rules: {args.events / elapsed:,.0f} events/s, "
          f"{conditions / elapsed:,.0f} rule evaluations/s, {made / elapsed:,.0f} requests "
          f"built/s ({made} requests)")

    preferences = {**empty_state("acme", "u1"), "channel_opt_outs": ["sms"],
                   "quiet_hours": {"start": "22:00", "end": "07:00"},
                   "timezone": "Europe/Paris"}
    request = {"tenant_id": "acme", "category": "orders", "priority": "normal",
               "channels": ["email", "sms"], "fallback_channels": [],
               "recipients": [{"user_id": "u1"}]}
    now = int(time.time() * 1000)
    started = time.perf_counter()
    for _ in range(args.events):
        decide(request, preferences, now, ("security",))
    elapsed = time.perf_counter() - started
    print(f"preference decisions: {args.events / elapsed:,.0f}/s")


if __name__ == "__main__":
    main()
