"""The benchmark's report: the JSON as measured, and a Markdown table for people.

Targets are the ones in the performance issue, for a two-core machine. They are reported,
never asserted: a benchmark that fails a build on a time would fail on a busy machine.
"""

from __future__ import annotations

from typing import Any

TARGETS = {
    "pipeline": (5_000, 10_000),  # events/s per worker: minimum, goal
    "pipeline_ratio": (0.15, None),  # pipeline ÷ raw aiokafka loop
    "delivery": (1_000, 2_500),  # webhook deliveries/s
    "p50_ms": 25,
    "p99_ms": 150,
    "rss_mb": 400,
}


def _n(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _met(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "**no**")


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    ceiling = results.get("ceiling", {})
    loop = (ceiling.get("aiokafka_loop") or {}).get("msgs_per_s")
    perf = (ceiling.get("producer_performance") or {}).get("records_per_s")
    pipe = results.get("pipeline") or {}
    scaling = results.get("scaling") or {}
    dlv = results.get("delivery") or {}
    lat = results.get("latency") or {}

    def ratio(value: float | None) -> str:
        return f"{value / loop:.2f}" if value and loop else "—"

    rows: list[tuple[str, str, str, str, str]] = []
    rows.append(("Raw ceiling: Kafka ProducerPerformance (records/s, 500 B, acks=all, lz4)",
                 _n(perf), "—", "", ""))
    rows.append(("Raw ceiling: aiokafka consume→produce loop (msgs/s)", _n(loop), "1.00",
                 "", ""))
    faust_agent = (ceiling.get("faust_agent") or {}).get("events_per_s")
    faust_table = (ceiling.get("faust_table") or {}).get("events_per_s")
    rows.append(("Faust ceiling: one worker of our app, an agent doing nothing (events/s)",
                 _n(faust_agent), ratio(faust_agent), "", ""))
    rows.append(("Faust ceiling: the same agent writing one table key per event (events/s)",
                 _n(faust_table), ratio(faust_table), "", ""))
    pipe_rate = pipe.get("events_per_s")
    low, goal = TARGETS["pipeline"]
    rows.append((f"Pipeline, 1 worker, intake→dispatch→channel (events/s, {_count(pipe)})",
                 _n(pipe_rate), ratio(pipe_rate), f"≥ {low:,} (goal {goal:,})",
                 _met(pipe_rate >= low if pipe_rate else None)))
    rows.append(("Pipeline ÷ raw aiokafka loop", ratio(pipe_rate), "", "≥ 0.15",
                 _met(pipe_rate / loop >= TARGETS["pipeline_ratio"][0]
                      if pipe_rate and loop else None)))
    rows.append(("  steady state, 5th→95th percentile record (events/s)",
                 _n(pipe.get("steady_events_per_s")), ratio(pipe.get("steady_events_per_s")),
                 "", ""))
    rows.append(("  intake stage (its `accepted` statuses, events/s)",
                 _n(pipe.get("intake_events_per_s")), ratio(pipe.get("intake_events_per_s")),
                 "", ""))
    two = scaling.get("2") or {}
    if two:
        rows.append((f"Pipeline, 2 workers (events/s total, {_count(two)}; per worker "
                     f"{_n(two.get('events_per_s_per_worker'))})",
                     _n(two.get("events_per_s")), ratio(two.get("events_per_s")), "", ""))
        if two.get("routed_again"):
            rows.append(("  requests routed again after the rebalance (at-least-once)",
                         _n(two.get("routed_again")), "", "", ""))
        if pipe_rate and two.get("events_per_s"):
            rows.append(("  scaling, 2 workers ÷ 1 worker",
                         f"{two['events_per_s'] / pipe_rate:.2f}", "", "", ""))
    dlv_rate = dlv.get("deliveries_per_s")
    low, goal = TARGETS["delivery"]
    rows.append((f"Webhook deliveries/s, 1 worker ({_count(dlv, 'delivered')}, "
                 f"concurrency {dlv.get('concurrency', '—')})",
                 _n(dlv_rate), "—", f"≥ {low:,} (goal {goal:,})",
                 _met(dlv_rate >= low if dlv_rate else None)))
    if dlv:
        rows.append(("  steady state, 5th→95th percentile delivery (deliveries/s)",
                     _n(dlv.get("steady_deliveries_per_s")), "", "", ""))
    for key in ("latency", "latency_unsaturated"):
        rows += _latency_rows(results.get(key) or {})
    for label, value in _rss_rows(results):
        rows.append((f"Worker peak RSS, {label} (MB)", _n(value), "",
                     f"≤ {TARGETS['rss_mb']}", _met(value <= TARGETS["rss_mb"] if value else None)))

    lines = [f"# Tidings benchmark — {results['started']}", ""]
    if results.get("label") != "latest":
        lines += [f"Run label: `{results.get('label')}` (smoke sizes: figures are not meaningful)",
                  ""]
    lines += ["| figure | value | ÷ raw loop | target | met |", "|---|---:|---:|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    lines += ["", "## Where the CPU went", "",
              "| run | worker cores | receiver cores | other load on the box (cores) |",
              "|---|---:|---:|---:|"]
    if loop:
        lines.append(f"| aiokafka loop | {_n(ceiling['aiokafka_loop'].get('cores'), 2)} | | |")
    if pipe:
        lines.append(f"| pipeline, 1 worker | {_cores(pipe.get('worker_cores'))} | | "
                     f"{_n(pipe.get('other_cores'), 2)} |")
    if two:
        lines.append(f"| pipeline, 2 workers | {_cores(two.get('worker_cores'))} | | "
                     f"{_n(two.get('other_cores'), 2)} |")
    if dlv:
        lines.append(f"| delivery | {_n(dlv.get('worker_cores'), 2)} | "
                     f"{_n(dlv.get('receiver_cores'), 2)} | {_n(dlv.get('other_cores'), 2)} |")
    if lat:
        lines.append(f"| latency at {lat['rate']:,.0f}/s | {_n(lat.get('worker_cores'), 2)} | | "
                     f"{_n(lat.get('other_cores'), 2)} |")
    unsat = results.get("latency_unsaturated") or {}
    if unsat:
        lines.append(f"| latency at {unsat['rate']:,.0f}/s | {_n(unsat.get('worker_cores'), 2)} |"
                     f" | {_n(unsat.get('other_cores'), 2)} |")
    lines += ["", "\"Other load\" is CPU the machine spent outside the worker, receiver, broker "
              "and harness during the measured window: other work on the box.", ""]

    for run in [r for r in (lat, unsat) if r.get("per_second")]:
        p99s = [str(b["p99"]) for b in run["per_second"]]
        align = run.get("commit_alignment", {})
        lines += [f"## Latency over time at {run['rate']:,.0f}/s", "",
                  f"p99 (ms) of each second of publishing: {' '.join(p99s)}", "",
                  f"Deliveries at or above the run's p99 ({align.get('slow_threshold_ms')} ms, "
                  f"{align.get('slow_count')} of them): phase concentration R at the commit "
                  f"interval ({run.get('commit_interval_s')} s) = "
                  f"{align.get('r_at_commit_interval')}, at other periods "
                  f"{align.get('r_at_other_periods')} (R near 0: no periodicity; "
                  "R well above the others: spikes line up with commits). "
                  f"p90 by tenth of the commit period (ms): {align.get('p90_by_phase_ms')}, "
                  f"peak ÷ median {align.get('phase_peak_over_median')} (level: no periodic "
                  "stall).", ""]

    for key, title in (("pipeline", "Profile of the pipeline worker"),
                       ("delivery", "Profile of the delivery worker")):
        profile = (results.get(key) or {}).get("profile")
        if profile and profile.get("samples"):
            threads = ", ".join(f"{name} {share}%" for name, share in profile["threads"].items())
            lines += [f"## {title}", "",
                      f"py-spy during the measured run: {profile['samples']:,} busy samples "
                      f"over {profile['duration_s']} s ({profile['busy_cores']} cores busy; "
                      f"threads: {threads}). Self = innermost Python frame; % of busy time.", "",
                      "| # | function | where | self % | inclusive % |", "|---:|---|---|---:|---:|"]
            for i, row in enumerate(profile["self_by_function"][:10], 1):
                lines.append(f"| {i} | `{row['function']}` | {row['where']} | {row['self_pct']} | "
                             f"{row['inclusive_pct']} |")
            plumbing = ("_run_module_as_main", "_run_code", "<module>", "worker", "Command.",
                        "Group.invoke", "Context.invoke", "Worker.execute_from_commandline",
                        "BaseEventLoop.", "Handle._run", "Thread.", "ServiceThread.",
                        "WorkerThread.run")
            calls = [r for r in profile["inclusive_by_function"]
                     if not r["function"].startswith(plumbing)][:15]
            lines += ["", "Inclusive (with everything under it): " + ", ".join(
                f"`{r['function']}` ({r['where']}) {r['inclusive_pct']}%" for r in calls)]
            lines += ["", "Self time by package: " + ", ".join(
                f"{p['package']} {p['self_pct']}%" for p in profile["self_by_package"][:10]), ""]
            lines += ["Tidings' own functions, inclusive: " + ", ".join(
                f"`{r['function']}` ({r['where']}) {r['inclusive_pct']}%"
                for r in profile["tidings_inclusive"][:8]), ""]

    lines += ["## Environment", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in env.items()]
    if results.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in results["notes"]]
    if results.get("errors"):
        lines += ["", "## Errors", ""]
        lines += [f"- {name}: {error}" for name, error in results["errors"].items()]
    return "\n".join(lines) + "\n"


def _count(run: dict[str, Any], field: str = "routed") -> str:
    """`N=50,000`, or `cut at 60 s: 23,456 of 50,000` for a run that hit its time budget."""
    if not run:
        return "N=—"
    if run.get("cut"):
        return f"cut at the time budget: {_n(run.get(field))} of {_n(run.get('events'))}"
    return f"N={_n(run.get('events'))}"


def _latency_rows(lat: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    if not lat:
        return []
    bound = "≥ " if lat.get("lower_bounds") else ""
    head = f"{lat['rate']:,.0f}/s"
    if lat.get("saturated"):
        head += (f" — SATURATED: stopped publishing after {lat.get('published_s')} s, worker "
                 f"delivered {_n(lat.get('delivered_per_s'))}/s; "
                 f"{_n(lat.get('not_delivered_by_end'))} not delivered by the end")
    else:
        head += f" for {lat['seconds']:g} s"
    ok = not lat.get("saturated")
    return [
        (f"Latency p50 at {head} (ms)", bound + _n(lat.get("p50_ms")), "",
         f"≤ {TARGETS['p50_ms']}", _met(ok and lat["p50_ms"] <= TARGETS["p50_ms"])),
        ("  p99 (ms)", bound + _n(lat.get("p99_ms")), "", f"≤ {TARGETS['p99_ms']}",
         _met(ok and lat["p99_ms"] <= TARGETS["p99_ms"])),
        ("  p99.9 (ms)", bound + _n(lat.get("p999_ms")), "", "", ""),
        ("  max (ms)", bound + _n(lat.get("max_ms")), "", "", ""),
    ]


def _cores(values: list[float | None] | None) -> str:
    return " + ".join(_n(v, 2) for v in values) if values else "—"


def _rss_rows(results: dict[str, Any]) -> list[tuple[str, float | None]]:
    rows = []
    pipe = results.get("pipeline") or {}
    if pipe.get("worker_peak_rss_mb"):
        rows.append(("pipeline run", max(v or 0 for v in pipe["worker_peak_rss_mb"])))
    two = (results.get("scaling") or {}).get("2") or {}
    if two.get("worker_peak_rss_mb"):
        rows.append(("pipeline, 2 workers (each)",
                     max(v or 0 for v in two["worker_peak_rss_mb"])))
    if (results.get("delivery") or {}).get("worker_peak_rss_mb"):
        rows.append(("delivery run", results["delivery"]["worker_peak_rss_mb"]))
    if (results.get("latency") or {}).get("worker_peak_rss_mb"):
        rows.append(("latency run", results["latency"]["worker_peak_rss_mb"]))
    return rows
