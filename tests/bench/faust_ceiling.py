"""The Faust ceiling: how fast one worker process of our Faust app goes with no work at all,
and with nothing but one table write per event (`make bench`, step 1c).

The pipeline pays both: Faust's per-event machinery, and at least one table write per
request (the dedup window's entry, agents/dedup.py). So these two rates bound what any
pipeline on this stack can reach on the machine, the way the aiokafka loop bounds it for
plain Kafka clients.

Run as a child process (`python tests/bench/faust_ceiling.py --mode table ...`): it prints
one JSON line with the rate and exits once it has seen every record.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import kafka_io  # noqa: E402  (tests/bench)
import processes  # noqa: E402

from streams.app import create_app, raw_topic  # noqa: E402
from streams.settings import Settings  # noqa: E402

MODES = ("events", "table")


def measure(bootstrap: str, records: int, mode: str, prefix: str, workdir: Path,
            python: str = sys.executable) -> dict[str, Any]:
    """Fill a topic with `records` 500-byte records and time a child worker through them."""
    topic = f"{prefix}.faust-{mode}"
    kafka_io.create_topic(bootstrap, topic, 8)
    kafka_io.produce_all(bootstrap, topic, (
        (f"tenant-{i % 200}/user-{i}".encode(), os.urandom(490)) for i in range(records)))
    out = subprocess.run(
        [python, __file__, "--bootstrap", bootstrap, "--topic", topic, "--records", str(records),
         "--mode", mode, "--data-dir", str(workdir / f"faust-{mode}")],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"the Faust ceiling run printed nothing: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _run(args: argparse.Namespace) -> None:
    settings = Settings(kafka_bootstrap=args.bootstrap,
                        app_id=f"faust-ceiling-{uuid.uuid4().hex[:8]}",
                        data_dir=args.data_dir, partitions=8, web_port=processes.free_port())
    app = create_app(settings)
    source = raw_topic(app, args.topic)
    table = app.Table("ceiling", default=None, partitions=8)
    seen = 0
    started = 0.0

    def count() -> None:
        nonlocal seen, started
        seen += 1
        if seen == 1:
            started = time.perf_counter()
        elif seen == args.records:
            elapsed = time.perf_counter() - started
            line = json.dumps({"mode": args.mode, "records": seen,
                               "events_per_s": round((seen - 1) / elapsed, 1)})
            os.write(1, f"{line}\n".encode())  # Faust's worker redirects sys.stdout to logs
            os._exit(0)  # measured; the worker's shutdown is not

    @app.agent(source)
    async def agent(stream: Any) -> None:
        async for event in stream.events():
            if args.mode == "table":
                key = event.key.decode()
                table[key] = [key, seen]
            count()

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    _run(parser.parse_args())
