"""Tidings' Grafana dashboard, as code: `python deploy/grafana/generate.py` writes
`deploy/grafana/dashboards/tidings.json` (a test checks the committed file is what this
produces, and hands every query to promtool).

Built with grafana-foundation-sdk, the build for Grafana 11.6 (pinned in pyproject.toml).
Every query deduplicates the consumer lag with `max by (group, topic, partition)`: each
worker reports its groups' lag for every partition, so several instances report the same
figure.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "tidings.json"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"

LAG = "max by (group, topic, partition) (notification_consumer_lag)"


def _stage_of(expr: str) -> str:
    """Name each lag series after its stage (and channel) from the topic it reads:
    `<prefix>.requests` → intake, `.dispatch` → dispatch, `.channel.<c>` → deliver <c>,
    `.retry.<c>.<tier>` → delay line <c>."""
    for stage, pattern in (
        ("intake", r".*\\.requests"),
        ("dispatch", r".*\\.dispatch"),
        ("deliver $1", r".*\\.channel\\.(.+)"),
        ("delay line $1", r".*\\.retry\\.([^.]+)\\..+"),
    ):
        expr = f'label_replace({expr}, "stage", "{stage}", "topic", "{pattern}")'
    return expr


def query(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return (prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref)
            .datasource(DATASOURCE))


def graph(title: str, description: str, unit: str, *queries: prometheus.Dataquery,
          width: int = 12) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit)
             .datasource(DATASOURCE).span(width).height(8).min(0).fill_opacity(10))
    for q in queries:
        panel = panel.with_target(q)
    return panel


def _breaker_states() -> statetimeline.Panel:
    def state(text: str, color: str, index: int) -> model.ValueMappingResult:
        return model.ValueMappingResult(text=text, color=color, index=index)

    mapping = model.ValueMap(options={
        "0": state("closed", "green", 0),
        "1": state("half-open", "yellow", 1),
        "2": state("open", "red", 2),
    })
    return (
        statetimeline.Panel().title("Circuit breakers")
        .description("Per provider endpoint: closed, half-open (trial calls) or open "
                     "(deliveries parked in the retry tiers).")
        .datasource(DATASOURCE).span(12).height(8).mappings([mapping])
        .with_target(query("max by (service) (notification_circuit_breaker_state)",
                           "{{service}}"))
    )


def _stat(title: str, expr: str, unit: str) -> stat.Panel:
    return (stat.Panel().title(title).unit(unit).datasource(DATASOURCE).span(6).height(4)
            .with_target(query(expr, "")))


def build() -> dash.Dashboard:
    delivered = "notification_requests_total{status=\"delivered\"}"
    return (
        dash.Dashboard("Tidings")
        .uid("tidings-overview")
        .description("Streams, throughput, latency, failures and tenants of Tidings workers.")
        .tags(["tidings", "generated"])
        .refresh("30s")
        .time("now-1h", "now")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .with_variable(dash.DatasourceVariable("datasource").label("Data source")
                       .type("prometheus"))
        .with_row(dash.Row("Overview"))
        .with_panel(_stat("Accepted /s",
                          f'sum(rate(notification_requests_total{{status="accepted"}}[{RATE}]))',
                          "reqps"))
        .with_panel(_stat("Delivered /s", f"sum(rate({delivered}[{RATE}]))", "reqps"))
        .with_panel(_stat("Consumer lag", f"sum({LAG})", "short"))
        .with_panel(_stat("Workers up", 'sum(up{job="tidings-worker"})', "short"))
        .with_row(dash.Row("Streams"))
        .with_panel(graph(
            "Consumer lag per stage and channel",
            "Records waiting, by the stage that reads the topic (delivery and delay line "
            "per channel).", "short",
            query(f"sum by (stage) ({_stage_of(LAG)})", "{{stage}}"),
        ))
        .with_panel(graph(
            "Consumer lag, top partitions",
            "The ten partitions furthest behind: one hot partition points at a hot key.",
            "short",
            query(f"topk(10, {LAG})", "{{topic}} [{{partition}}]"),
        ))
        .with_panel(graph(
            "Stage processing time p99",
            "Time one stage spends on one record (a delivery includes the provider's answer).",
            "s",
            query("histogram_quantile(0.99, sum by (le, stage) "
                  f"(rate(notification_stage_duration_seconds_bucket[{RATE}])))", "{{stage}}"),
        ))
        .with_panel(graph(
            "Records processed per stage", "Records through each stage per second.", "ops",
            query(f"sum by (stage) (rate(notification_stage_duration_seconds_count[{RATE}]))",
                  "{{stage}}"),
        ))
        .with_row(dash.Row("Throughput and latency"))
        .with_panel(graph(
            "Statuses /s", "Every status the pipeline records, by status.", "reqps",
            query(f"sum by (status) (rate(notification_requests_total[{RATE}]))",
                  "{{status}}"),
        ))
        .with_panel(graph(
            "Deliveries /s by channel", "Delivered notifications per channel.", "reqps",
            query(f"sum by (channel) (rate({delivered}[{RATE}]))", "{{channel}}"),
        ))
        .with_panel(graph(
            "End-to-end latency p50 / p99",
            "From the notification's created_at (publish) to its delivery, per channel; "
            "includes time spent in retry tiers.", "s",
            query("histogram_quantile(0.5, sum by (le, channel) "
                  f"(rate(notification_duration_seconds_bucket[{RATE}])))",
                  "p50 {{channel}}", "A"),
            query("histogram_quantile(0.99, sum by (le, channel) "
                  f"(rate(notification_duration_seconds_bucket[{RATE}])))",
                  "p99 {{channel}}", "B"),
            width=24,
        ))
        .with_row(dash.Row("Failures"))
        .with_panel(graph(
            "Retries by channel and tier", "Deliveries sent to a retry tier.", "ops",
            query(f"sum by (channel, tier) (rate(notification_retries_total[{RATE}]))",
                  "{{channel}} {{tier}}"),
        ))
        .with_panel(graph(
            "Dead letters by stage and cause", "Records written to the dead-letter topic.",
            "ops",
            query("sum by (stage, error_class) "
                  f"(rate(notification_deadletters_total[{RATE}]))",
                  "{{stage}}: {{error_class}}"),
        ))
        .with_panel(graph(
            "Validation errors by type", "Requests the validate stage rejected.", "ops",
            query("sum by (error_type) "
                  f"(rate(notification_validation_errors_total[{RATE}]))", "{{error_type}}"),
        ))
        .with_panel(_breaker_states())
        .with_row(dash.Row("Tenants"))
        .with_panel(graph(
            "Rate-limit hits by tenant (top 10)",
            "Requests over a limit (deferred or dropped), by tenant and limit. Tenants past "
            "TIDINGS_METRICS_TENANT_LIMIT are counted as _other.", "ops",
            query("topk(10, sum by (tenant_id, type) "
                  f"(rate(notification_rate_limit_hits_total[{RATE}])))",
                  "{{tenant_id}} {{type}}"),
        ))
        .with_panel(graph(
            "Accepted by tenant (top 10)", "Accepted requests per tenant.", "reqps",
            query('topk(10, sum by (tenant_id) '
                  f'(rate(notification_requests_total{{status="accepted"}}[{RATE}])))',
                  "{{tenant_id}}"),
        ))
    )


def render() -> str:
    board = build().build()
    # Stable, unique panel ids (the builder leaves them unset, rows at 0), so links to a
    # panel (`viewPanel=`) survive regeneration.
    for number, panel in enumerate(board.panels or [], start=1):
        panel.id_val = number
    return JSONEncoder(sort_keys=True, indent=2).encode(board) + "\n"


def main() -> None:
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
