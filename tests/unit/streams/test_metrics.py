"""streams/metrics: bounded label values, the lag arithmetic and the lag gauge."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from streams.errors import SerializationError, ValidationError
from streams.metrics.instruments import OTHER_TENANTS, TenantLabels, validation_error_type
from streams.metrics.lag import ConsumerLag, consumed_topics, partition_lag
from streams.settings import Settings


def test_tenant_labels_keep_the_first_tenants_and_fold_the_rest() -> None:
    label = TenantLabels(limit=2)
    assert [label(t) for t in ("acme", "globex", "initech", "acme", "umbrella", "globex")] == [
        "acme", "globex", OTHER_TENANTS, "acme", OTHER_TENANTS, "globex",
    ]
    assert label(None) == OTHER_TENANTS  # never a None label


def test_tenant_labels_with_an_allow_list_label_only_those() -> None:
    label = TenantLabels(limit=100, allow=["acme"])
    assert [label(t) for t in ("globex", "acme", "initech")] == [
        OTHER_TENANTS, "acme", OTHER_TENANTS,
    ]


def test_tenant_labels_at_zero_fold_everyone() -> None:
    label = TenantLabels(limit=0)
    assert {label(t) for t in ("a", "b", "c")} == {OTHER_TENANTS}


def test_validation_error_types_are_bounded_by_the_schema() -> None:
    fields = {"tenant_id", "recipients", "channels", "data"}
    rows = [
        (SerializationError("not Avro"), "SerializationError"),
        (ValidationError("bad", field="channels"), "ValidationError:channels"),
        (ValidationError("bad", field="recipients[3].email"), "ValidationError:recipients"),
        (ValidationError("bad", field="data.customer-secret-key"), "ValidationError:data"),
        # An unknown field's name is the caller's text: never a label value.
        (ValidationError("unknown", field="my_field_123"), "ValidationError:other"),
        (ValidationError("no field"), "ValidationError"),
    ]
    for error, expected in rows:
        assert validation_error_type(error, fields) == expected, error


def test_partition_lag() -> None:
    rows = [
        # committed, low, high, lag
        (40, 0, 100, 60),
        (100, 0, 100, 0),
        (None, 0, 100, 100),  # nothing committed: the group starts at `earliest`
        (None, 30, 100, 70),
        (10, 30, 100, 70),  # committed offset deleted by retention: resets to earliest
        (None, 0, 0, 0),
    ]
    for committed, low, high, lag in rows:
        assert partition_lag(committed, low, high) == lag, (committed, low, high)


def test_consumed_topics_cover_every_stage_whatever_this_worker_runs() -> None:
    settings = Settings(app_id="tid", topic_prefix="p", stages=("deliver",),
                        enabled_channels=("webhook", "sms"), retry_tiers_s=(5, 60))
    assert consumed_topics(settings) == {
        "tid": ("p.requests", "p.dispatch", "p.channel.webhook", "p.channel.sms"),
        "tid.delay-line": ("p.retry.webhook.5s", "p.retry.webhook.1m", "p.retry.sms.5s",
                           "p.retry.sms.1m"),
    }


def test_lag_gauge_shows_the_latest_snapshot_only() -> None:
    registry = CollectorRegistry()
    lag = ConsumerLag()
    registry.register(lag)
    lag.update({("g", "t", 0): 5, ("g", "t", 1): 7})
    assert registry.get_sample_value(
        "notification_consumer_lag", {"group": "g", "topic": "t", "partition": "1"}) == 7
    lag.update({("g", "t", 0): 0})
    text = generate_latest(registry).decode()
    assert 'notification_consumer_lag{group="g",partition="0",topic="t"} 0.0' in text
    assert 'partition="1"' not in text
