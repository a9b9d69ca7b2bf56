"""Tests for streams/settings.py: environment, YAML file, validation, ConfigError."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pydantic
import pytest

from streams.errors import ConfigError
from streams.settings import load_settings


def secret(key_bytes: int) -> str:
    return "whsec_" + base64.b64encode(b"k" * key_bytes).decode()


SECRET = secret(32)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: no TIDINGS_ variable from the shell that runs the suite."""
    for name in list(os.environ):
        if name.upper().startswith("TIDINGS_"):
            monkeypatch.delenv(name)


def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "tidings.yaml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("TIDINGS_CONFIG_FILE", str(path))
    return path


def test_defaults() -> None:
    settings = load_settings()
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.topic_prefix == "tidings"
    assert settings.enabled_channels == ("webhook",)
    assert settings.retry_tiers_s == (5.0, 30.0, 300.0, 1800.0)
    assert settings.rate_limit_policy == "defer"
    assert settings.webhook_secret is None


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        ("TIDINGS_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092", "kafka_bootstrap",
         "kafka-1:9092,kafka-2:9092"),
        ("TIDINGS_TOPIC_PREFIX", "t1", "topic_prefix", "t1"),
        ("TIDINGS_PARTITIONS", "3", "partitions", 3),
        ("TIDINGS_REPLICATION_FACTOR", "3", "replication_factor", 3),
        ("TIDINGS_DATA_DIR", "/var/lib/tidings", "data_dir", Path("/var/lib/tidings")),
        ("TIDINGS_COMMIT_INTERVAL_S", "0.25", "commit_interval_s", 0.25),
        ("TIDINGS_DEDUP_WINDOW_S", "60", "dedup_window_s", 60.0),
        ("TIDINGS_RATE_USER_PER_MIN", "12.5", "rate_user_per_min", 12.5),
        ("TIDINGS_RATE_BURST", "4", "rate_burst", 4),
        ("TIDINGS_RATE_LIMIT_POLICY", "drop", "rate_limit_policy", "drop"),
        ("TIDINGS_LOG_LEVEL", "debug", "log_level", "debug"),
        # Tuples are given as JSON.
        ("TIDINGS_RETRY_TIERS_S", "[1,2]", "retry_tiers_s", (1.0, 2.0)),
        ("TIDINGS_RETRY_TIERS_S", "[1, 10, 60]", "retry_tiers_s", (1.0, 10.0, 60.0)),
        ("TIDINGS_ENABLED_CHANNELS", '["webhook", "email"]', "enabled_channels",
         ("webhook", "email")),
    ],
)
def test_reads_environment(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, attribute: str, expected: Any
) -> None:
    monkeypatch.setenv(variable, value)
    assert getattr(load_settings(), attribute) == expected


def test_reads_the_webhook_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_WEBHOOK_SECRET", SECRET)
    settings = load_settings()
    assert settings.webhook_key() == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)


def test_reads_the_yaml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_file(tmp_path, monkeypatch, (
        "kafka_bootstrap: kafka-1:9092\n"
        "partitions: 12\n"
        "retry_tiers_s: [1, 10, 100]\n"
        "enabled_channels: [webhook]\n"
        f"webhook_secret: {SECRET}\n"
    ))
    settings = load_settings()
    assert settings.kafka_bootstrap == "kafka-1:9092"
    assert settings.partitions == 12
    assert settings.retry_tiers_s == (1.0, 10.0, 100.0)
    assert settings.webhook_key() == SECRET


def test_environment_wins_over_the_yaml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file(tmp_path, monkeypatch, "partitions: 12\ntopic_prefix: from-file\n")
    monkeypatch.setenv("TIDINGS_PARTITIONS", "3")
    settings = load_settings()
    assert settings.partitions == 3
    assert settings.topic_prefix == "from-file"  # what the environment does not set


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_PARTITIONS", "3")
    assert load_settings(partitions=2).partitions == 2


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(pydantic.ValidationError):
        settings.partitions = 2


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TIDINGS_WEBHOOK_SECRET", "not-a-secret"),
        ("TIDINGS_WEBHOOK_SECRET", "whsec_!!!not base64!!!"),
        ("TIDINGS_WEBHOOK_SECRET", secret(16)),
        ("TIDINGS_WEBHOOK_SECRET", secret(23)),
        ("TIDINGS_WEBHOOK_SECRET", secret(65)),
        ("TIDINGS_RETRY_TIERS_S", "[5, 5]"),
        ("TIDINGS_RETRY_TIERS_S", "[30, 5]"),
        ("TIDINGS_RETRY_TIERS_S", "[]"),
        ("TIDINGS_RETRY_TIERS_S", "[0.5, 10]"),
        ("TIDINGS_RETRY_TIERS_S", "[1, 1.5]"),
        ("TIDINGS_ENABLED_CHANNELS", '["webhook", "fax"]'),
        ("TIDINGS_PARTITIONS", "0"),
        ("TIDINGS_RATE_BURST", "0"),
        ("TIDINGS_RATE_TENANT_PER_MIN", "0"),
        ("TIDINGS_RATE_LIMIT_POLICY", "queue"),
        ("TIDINGS_LOG_LEVEL", "trace"),
    ],
)
def test_invalid_environment_raises_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert f"{variable}:" in str(caught.value)


def test_config_error_does_not_show_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = secret(16)
    monkeypatch.setenv("TIDINGS_WEBHOOK_SECRET", bad)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert bad not in str(caught.value)
    assert caught.value.__cause__ is None
    assert bad not in repr(caught.value.__context__)


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("TIDINGS_ENABLED_CHANNELS", "webhook", "lists are JSON"),
        ("TIDINGS_RETRY_TIERS_S", "1,2", "lists are JSON"),
        ("TIDINGS_CONFIG_FILE", "/nonexistent/tidings.yaml", "is not a file"),
    ],
)
def test_unparseable_settings_raise_config_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=says):
        load_settings()


@pytest.mark.parametrize("text", ["partitions: [\n", "- a\n- b\n"])
def test_a_yaml_file_that_is_not_a_mapping_raises_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    config_file(tmp_path, monkeypatch, text)
    with pytest.raises(ConfigError, match="TIDINGS_CONFIG_FILE"):
        load_settings()


def test_every_invalid_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_PARTITIONS", "0")
    monkeypatch.setenv("TIDINGS_ENABLED_CHANNELS", '["fax"]')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "TIDINGS_PARTITIONS:" in str(caught.value)
    assert "TIDINGS_ENABLED_CHANNELS:" in str(caught.value)


def test_an_invalid_yaml_value_raises_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file(tmp_path, monkeypatch, "retry_tiers_s: [30, 5]\n")
    with pytest.raises(ConfigError, match="RETRY_TIERS_S"):
        load_settings()


@pytest.mark.parametrize("key_bytes", [24, 32, 64])
def test_standard_webhooks_secret_lengths_are_accepted(
    monkeypatch: pytest.MonkeyPatch, key_bytes: int
) -> None:
    monkeypatch.setenv("TIDINGS_WEBHOOK_SECRET", secret(key_bytes))
    assert load_settings().webhook_key() == secret(key_bytes)


def test_webhook_key_without_a_secret_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="TIDINGS_WEBHOOK_SECRET"):
        load_settings().webhook_key()


@pytest.mark.parametrize(
    ("prefix", "name", "topic"),
    [("tidings", "requests", "tidings.requests"), ("t1", "channel.webhook", "t1.channel.webhook")],
)
def test_topic_names_carry_the_prefix(prefix: str, name: str, topic: str) -> None:
    assert load_settings(topic_prefix=prefix).topic(name) == topic


def test_routing_runs_concurrently_only_where_tenants_are_enriched():
    from streams.settings import load_settings

    assert load_settings().routing_concurrency() == 1
    assert load_settings(enrich_tenants=("acme",)).routing_concurrency() == 8
    assert load_settings(enrich_insecure_channels={"*": ("sms",)},
                         enrich_concurrency=4).routing_concurrency() == 4
