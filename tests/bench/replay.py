"""How fast `tidings replay` reads, plans and re-publishes a range (no worker running).

    TIDINGS_KAFKA_BOOTSTRAP=127.0.0.1:9092 .venv/bin/python tests/bench/replay.py [--records N]

Publishes N requests to a fresh prefix, then times a dry run (read + decode + plan), a plain
replay (read + send unchanged) and a --resend replay of one tenant (read + decode +
re-encode + send). The last reads 2N records — the originals and the plain replay's copies —
and sends one copy of each of that tenant's requests (N/2).
The topics are left for the broker's retention to remove.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from streams.bounds import Bound  # noqa: E402
from streams.publisher import Publisher  # noqa: E402
from streams.replayer import ReplayRequest, replay  # noqa: E402
from streams.settings import load_settings  # noqa: E402
from streams.topics import create_topics  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    run = f"bench-replay-{uuid.uuid4().hex[:8]}"
    settings = load_settings(topic_prefix=run, app_id=run, partitions=4,
                             kafka_bootstrap=os.environ.get("TIDINGS_KAFKA_BOOTSTRAP",
                                                            "127.0.0.1:9092"))
    create_topics(settings)
    with Publisher(settings) as publisher:
        publisher.publish_many(
            {"tenant_id": "acme" if i % 2 else "globex", "channels": ["webhook"],
             "recipients": [{"user_id": f"u{i}", "webhook_url": "https://h.example.com/"}],
             "title": "Bench", "content": "x" * 200}
            for i in range(args.records))
    topic = settings.topic("requests")
    whole = (Bound("earliest"), Bound("latest"))
    for label, ask in [
        ("dry run (read, decode, plan)", ReplayRequest(topic, *whole, dry_run=True)),
        ("replay (read, send unchanged)", ReplayRequest(topic, *whole, dry_run=False)),
        ("--resend --tenant acme (decode, re-encode half)",
         ReplayRequest(topic, *whole, tenant="acme", resend=True)),
    ]:
        started = time.perf_counter()
        report = replay(settings, ask)
        elapsed = time.perf_counter() - started
        read = sum(report.read.values())
        print(f"{label:48} {read:>7} read {sum(report.sent.values()):>7} sent "
              f"in {elapsed:5.2f}s  {read / elapsed:>8,.0f} records/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
