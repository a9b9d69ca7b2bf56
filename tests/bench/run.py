"""Tidings benchmarks: raw Kafka ceilings, pipeline and delivery throughput, latency at a
steady rate, worker memory, scaling over worker processes, and py-spy profiles of the
pipeline and delivery workers taken during their measured runs.

    make bench          # full size, about 5 minutes on two cores
    make bench-smoke    # tiny sizes, checks the harness end to end
    .venv/bin/python tests/bench/run.py --help

Starts a local broker (deploy/local) unless TIDINGS_KAFKA_BOOTSTRAP names one. Writes
tests/bench/results/<label>.json and <label>.md (and, for the full run, a timestamped copy
of both) and prints the Markdown. Nothing here asserts a time: the targets are reported
beside the figures. Exits non-zero when a run failed or came back incomplete.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(REPO), str(REPO / "deploy" / "local")]

import ceiling  # noqa: E402
import faust_ceiling  # noqa: E402
import kafka_local  # noqa: E402
import latency  # noqa: E402
import processes  # noqa: E402
import profiling  # noqa: E402
import report  # noqa: E402
import scenarios  # noqa: E402
import workload  # noqa: E402

RESULTS = HERE / "results"


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000,
                        help="requests through the pipeline runs (default 50,000)")
    parser.add_argument("--delivery-events", type=int, default=20_000,
                        help="ChannelMessages for the delivery run (default 20,000)")
    parser.add_argument("--ceiling-records", type=int, default=500_000,
                        help="records for Kafka's ProducerPerformance (default 500,000); "
                             "the aiokafka loop moves --events records")
    parser.add_argument("--latency-seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="requests/s of the latency run (default 1,000)")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds a throughput run may take after its workers start; a "
                             "run still going then is measured on what came through "
                             "(default 60)")
    parser.add_argument("--fallback-seconds", type=float, default=20.0,
                        help="when the latency run saturates, a second run this long at half "
                             "the rate the worker managed (0: none; default 20)")
    parser.add_argument("--commit-interval", type=float, default=1.0,
                        help="TIDINGS_COMMIT_INTERVAL_S of the latency run's worker")
    parser.add_argument("--workers", default="1,2",
                        help="worker counts of the scaling runs, comma-separated (default 1,2)")
    parser.add_argument("--profile", choices=("pipeline", "delivery", "both", "none"),
                        default="both",
                        help="py-spy profile of the worker during the 1-worker pipeline run, "
                             "the delivery run, or both (default both)")
    parser.add_argument("--only", default="ceiling,pipeline,scaling,delivery,latency",
                        help="runs to do, comma-separated (default: all)")
    parser.add_argument("--keep-workdir", action="store_true",
                        help="keep the work directory (worker logs, data) after a good run")
    parser.add_argument("--label", default="latest",
                        help="results file name (default latest; a timestamped copy is kept "
                             "for 'latest' only)")
    return parser.parse_args(argv)


class Progress:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)


def environment() -> dict[str, Any]:
    import aiokafka
    import confluent_kafka
    import fastavro
    import faust
    import httpx
    import psutil

    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or "?"
    spy = profiling.py_spy()
    return {
        "python": platform.python_version(),
        "kafka": kafka_local.KAFKA_VERSION,
        "aiokafka": aiokafka.__version__,
        "faust-streaming": faust.__version__,
        "confluent-kafka": f"{confluent_kafka.__version__} "
                           f"(librdkafka {confluent_kafka.libversion()[0]})",
        "fastavro": fastavro.__version__,
        "httpx": httpx.__version__,
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "load_average_at_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "py-spy": "yes" if spy else "not installed",
    }


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    say = Progress()
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    worker_counts = [int(n) for n in args.workers.split(",") if n.strip()]
    started = datetime.datetime.now(datetime.UTC)
    results: dict[str, Any] = {
        "label": args.label,
        "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "parameters": vars(args),
        "environment": environment(),
        "errors": {},
    }
    workdir = Path(tempfile.mkdtemp(prefix="tidings-bench-"))
    say(f"work directory {workdir}")
    cluster: kafka_local.Cluster | None = None
    existing = os.environ.get("TIDINGS_KAFKA_BOOTSTRAP")
    if existing:
        bootstrap = existing
        say(f"using the broker at {bootstrap} (its CPU counts as other load)")
    else:
        say(f"starting local Kafka {kafka_local.KAFKA_VERSION} …")
        cluster = kafka_local.Cluster(size=1, base_dir=workdir / "kafka")
        bootstrap = cluster.start()
        say(f"broker ready at {bootstrap}")
    monitor = processes.Monitor()
    broker_names = []
    if cluster is not None:
        for node in cluster.nodes:
            if node.pid:
                monitor.watch(f"broker-{node.node_id}", node.pid)
                broker_names.append(f"broker-{node.node_id}")
    ctx = scenarios.Context(bootstrap, monitor, workdir, say, broker_names)
    results["environment"]["request_size_bytes"] = round(
        workload.mean_encoded_size("http://127.0.0.1:8089"))
    stamp = started.strftime("%Y%m%dT%H%M%SZ")

    def step(name: str, title: str, run: Any) -> Any:
        say(title)
        begun = time.monotonic()
        try:
            value = run()
        except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
            say(f"  FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc()
            results["errors"][name] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            return None
        say(f"  done in {time.monotonic() - begun:.1f}s: {_headline(name, value)}")
        if isinstance(value, dict) and value.get("complete") is False:
            results["errors"][name] = "incomplete: not every record came through (see JSON)"
        return value

    profile_dir = RESULTS if args.profile != "none" else None
    if profile_dir is not None and profiling.py_spy() is None:
        results["notes"] = ["no profile: py-spy is not installed (`make bench` installs it)"]
        say("no profile: py-spy is not installed")
        profile_dir = None

    def profile_path(stage: str) -> Path | None:
        if profile_dir is None or args.profile not in (stage, "both"):
            return None
        return profile_dir / f"profile-{stage}-{stamp}.txt"

    try:
        if "ceiling" in only:
            results["ceiling"] = {
                "producer_performance": step(
                    "producer_performance",
                    f"1a. raw ceiling: Kafka ProducerPerformance, {args.ceiling_records:,} records",
                    lambda: ceiling.producer_performance(
                        bootstrap, str(kafka_local.libs_dir()), args.ceiling_records,
                        f"bench-{stamp.lower()}")),
                "aiokafka_loop": step(
                    "aiokafka_loop",
                    f"1b. raw ceiling: aiokafka consume→produce loop, {args.events:,} records",
                    lambda: ceiling.aiokafka_loop(bootstrap, args.events,
                                                  f"bench-{stamp.lower()}")),
                "faust_agent": step(
                    "faust_agent",
                    f"1c. Faust ceiling: an agent doing nothing, {args.events:,} records",
                    lambda: faust_ceiling.measure(bootstrap, args.events, "events",
                                                  f"bench-{stamp.lower()}", workdir)),
                "faust_table": step(
                    "faust_table",
                    f"1d. Faust ceiling: one table write an event, {args.events:,} records",
                    lambda: faust_ceiling.measure(bootstrap, args.events, "table",
                                                  f"bench-{stamp.lower()}", workdir)),
            }
        if "pipeline" in only:
            results["pipeline"] = step(
                "pipeline", f"2. pipeline throughput, 1 worker, {args.events:,} requests",
                lambda: scenarios.pipeline(ctx, args.events, budget_s=args.budget,
                                           profile_to=profile_path("pipeline")))
        if "scaling" in only:
            results["scaling"] = {}
            for count in worker_counts:
                if count == 1 and results.get("pipeline"):
                    results["scaling"]["1"] = results["pipeline"]
                    continue
                results["scaling"][str(count)] = step(
                    f"scaling_{count}",
                    f"6. pipeline throughput, {count} workers, {args.events:,} requests",
                    lambda count=count: scenarios.pipeline(ctx, args.events, workers=count,
                                                           budget_s=args.budget))
        if "delivery" in only:
            results["delivery"] = step(
                "delivery", f"3. webhook delivery throughput, {args.delivery_events:,} messages",
                lambda: scenarios.delivery(ctx, args.delivery_events, budget_s=args.budget,
                                           profile_to=profile_path("delivery")))
        if "latency" in only:
            results["latency"] = step(
                "latency",
                f"4. latency at {args.rate:,.0f}/s for {args.latency_seconds:g} s, every stage",
                lambda: latency.latency(ctx, args.latency_seconds, args.rate,
                                          commit_interval_s=args.commit_interval))
            managed = (results["latency"] or {}).get("delivered_per_s")
            if (results["latency"] or {}).get("saturated") and managed and args.fallback_seconds:
                rate = max(10.0, round(managed / 2, -1) if managed >= 40 else managed / 2)
                results["latency_unsaturated"] = step(
                    "latency_unsaturated",
                    f"4b. latency at {rate:,.0f}/s (half what the saturated worker delivered) "
                    f"for {args.fallback_seconds:g} s",
                    lambda: latency.latency(ctx, args.fallback_seconds, rate,
                                              commit_interval_s=args.commit_interval))
    finally:
        monitor.close()
        if cluster is not None:
            say("stopping the broker")
            cluster.stop()
    results["wall_s"] = round(time.monotonic() - say.started, 1)

    RESULTS.mkdir(exist_ok=True)
    text = report.markdown(results)
    outputs = [RESULTS / f"{args.label}.json", RESULTS / f"{args.label}.md"]
    (RESULTS / f"{args.label}.json").write_text(json.dumps(results, indent=2, default=str))
    (RESULTS / f"{args.label}.md").write_text(text)
    if args.label == "latest":
        for path in list(outputs):
            copy = RESULTS / f"{stamp}{path.suffix}"
            shutil.copyfile(path, copy)
            outputs.append(copy)
    print()
    print(text)
    say(f"wrote {', '.join(str(p.relative_to(REPO)) for p in outputs)}")
    if results["errors"]:
        say(f"{len(results['errors'])} problem(s): {', '.join(results['errors'])}")
        return 1
    if not args.keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _headline(name: str, value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    keys = ("records_per_s", "msgs_per_s", "events_per_s", "deliveries_per_s", "p50_ms",
            "p99_ms", "p999_ms", "max_ms", "worker_peak_rss_mb", "complete")
    return ", ".join(f"{k}={_fmt(value[k])}" for k in keys if k in value)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main())
