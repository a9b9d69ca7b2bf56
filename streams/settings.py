"""Worker and client settings: environment (`TIDINGS_` prefix), then an optional YAML file.

The YAML file is named by `TIDINGS_CONFIG_FILE`; its keys are the field names below
(`kafka_bootstrap: ...`). Environment variables win over the file. Settings are frozen and
validated once at start-up, so a bad value stops the process with a clear message.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from pydantic_settings.exceptions import SettingsError

from streams.errors import ConfigError

CHANNELS = ("email", "sms", "push", "slack", "webhook")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TIDINGS_", frozen=True, extra="ignore",
        # A rejected value may be a secret: never echo it into an error or a traceback.
        hide_input_in_errors=True,
    )

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "tidings"
    partitions: int = Field(8, ge=1)
    replication_factor: int = Field(1, ge=1)
    app_id: str = "tidings"

    # Worker
    data_dir: Path = Path(".cache/worker")
    web_port: int = 6066
    # Faust commits offsets at this interval, after flushing the producer. Under a backlog the
    # flush can take longer than the interval (see README, Performance), so this is the
    # least, not the most, that is reprocessed after a crash.
    commit_interval_s: float = Field(1.0, gt=0)
    # How long the group waits for a silent worker before handing its partitions to the
    # others (Kafka's session.timeout.ms; the broker allows 6 to 300 s by default).
    session_timeout_s: float = Field(60.0, ge=6, le=300)
    # How long the producer waits to fill a batch (Kafka's linger.ms): longer means fewer,
    # larger produce requests — less CPU per record — for that much more latency per hop.
    producer_linger_ms: float = Field(5.0, ge=0, le=1000)
    enabled_channels: tuple[str, ...] = ("webhook",)
    # Which stages this worker runs. All by default; a deployment may run delivery workers
    # apart from routing workers (same app id, different stage sets).
    stages: tuple[
        Literal["intake", "dispatch", "deliver", "delay_line", "rules", "analytics"], ...
    ] = ("intake", "dispatch", "deliver", "delay_line", "rules", "analytics")
    delivery_concurrency: int = Field(64, ge=1)
    log_level: Literal["crit", "error", "warn", "info", "debug"] = "warn"

    # Tracing and logs (streams/tracing.py, streams/logs.py). No endpoint: tracing is off (no
    # SDK, no exporter, no instrumentation). The endpoint is the collector's base URL, like
    # OTEL_EXPORTER_OTLP_ENDPOINT: http://collector:4318 (http/protobuf) or :4317 (grpc).
    otlp_endpoint: str | None = None
    otlp_protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    # Share of traces kept, decided where a trace starts (the publisher, or intake).
    trace_sample_ratio: float = Field(1.0, ge=0, le=1)

    # Dedup
    dedup_window_s: float = Field(24 * 3600, gt=0)

    # Rate limits (GCRA): sustained rate per minute plus a burst allowance.
    rate_tenant_per_min: float = Field(1000, gt=0)
    rate_user_per_min: float = Field(100, gt=0)
    rate_channel_per_min: float = Field(1000, gt=0)
    rate_burst: int = Field(10, ge=1)
    rate_limit_policy: Literal["defer", "drop"] = "defer"
    # How often the tenant and tenant-channel TATs, kept in memory, are written to the
    # rate-limits table (agents/rate_limit.py WriteBehind): what a crash can forget of them.
    rate_checkpoint_s: float = Field(1.0, gt=0, le=60)

    # Retries: one topic per tier, each with a fixed delay, so a tier is ordered by due time.
    retry_tiers_s: tuple[float, ...] = (5.0, 30.0, 300.0, 1800.0)

    # Circuit breaker per provider endpoint: opens when this share of calls failed within the
    # window (given at least `min_calls`), lets trial calls through after the cool-down.
    breaker_failure_threshold: float = Field(0.5, gt=0, le=1)
    breaker_window_s: float = Field(30.0, gt=0)
    breaker_min_calls: int = Field(10, ge=1)
    breaker_cooldown_s: float = Field(15.0, gt=0)
    # A message whose provider's breaker is still open this long after it was published moves
    # to its next fallback channel (if it names one).
    failover_after_s: float = Field(300.0, ge=0)

    # Webhook channel (Standard Webhooks): `whsec_` + base64 of the signing key.
    webhook_secret: SecretStr | None = None
    # Key rotation: deliveries are signed with the current secret and each of these, so
    # receivers that still hold an older one keep verifying during the change-over.
    webhook_previous_secrets: tuple[SecretStr, ...] = ()
    # The SSRF guard refuses endpoints on loopback, private, link-local, CGNAT and
    # unique-local addresses; these CIDRs are opened (e.g. ["127.0.0.0/8"] for local runs).
    webhook_ssrf_guard: bool = True
    webhook_allowed_networks: tuple[str, ...] = ()
    # Standard Webhooks recommends 15-30 s so endpoints can process before answering.
    webhook_timeout_s: float = Field(15.0, gt=0)

    # Email over SMTP. `starttls` never falls back to plain text; `none` is for local servers.
    smtp_host: str = "localhost"
    smtp_port: int | None = None
    smtp_from: str | None = None
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls_mode: Literal["none", "starttls", "implicit"] = "starttls"
    smtp_validate_certs: bool = True
    smtp_ca_file: str | None = None
    smtp_timeout_s: float = Field(60.0, gt=0)
    smtp_max_connections: int = Field(4, ge=1)
    # List-Unsubscribe URL. `tidings api` serves the one-click endpoint (streams/unsubscribe.py)
    # at /v1/unsubscribe?token={token}; the {token} placeholder needs TIDINGS_UNSUBSCRIBE_SECRET.
    email_unsubscribe_url: str = "http://127.0.0.1:6066/v1/unsubscribe?d={delivery_id}"

    # SMS, Twilio Messages API: a sender number or a Messaging Service.
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_base_url: str = "https://api.twilio.com"
    twilio_status_callback: str | None = None
    twilio_timeout_s: float = Field(10.0, gt=0)

    # Slack: a bot token for chat.postMessage; incoming-webhook URLs must start with a prefix.
    slack_bot_token: SecretStr | None = None
    slack_base_url: str = "https://slack.com"
    slack_webhook_url_prefixes: tuple[str, ...] = ("https://hooks.slack.com/",)
    slack_timeout_s: float = Field(30.0, gt=0)

    # Push, FCM HTTP v1: the service-account key file (JSON text or a path to it).
    fcm_service_account: SecretStr | None = None
    fcm_base_url: str = "https://fcm.googleapis.com"
    fcm_token_uri: str | None = None
    fcm_timeout_s: float = Field(10.0, gt=0)

    # Push, APNs: the provider token is signed with a .p8 key (ES256).
    apns_team_id: str | None = None
    apns_key_id: str | None = None
    apns_private_key: SecretStr | None = None
    apns_topic: str | None = None
    apns_base_url: str = "https://api.push.apple.com"
    apns_ttl_s: int = Field(86400, ge=0)
    apns_ca_file: str | None = None
    apns_timeout_s: float = Field(10.0, gt=0)

    # Enrichment (agents/enrichment): language, sentiment, entities, spam score, redaction.
    # Tenants whose notifications are enriched ("*": every tenant); a notification can ask
    # for it alone with metadata `enable_ml_analysis` = "true".
    enrich_tenants: tuple[str, ...] = ()
    enrich_entities: bool = True  # spaCy NER; False skips it (and never loads spaCy)
    # Over this spam score a notification is quarantined instead of sent; per tenant below.
    enrich_spam_threshold: float = Field(0.8, ge=0, le=1)
    enrich_spam_thresholds: dict[str, float] = {}
    # Channels whose text has personal data redacted, by tenant ("*": every tenant). Marking
    # a channel insecure enriches that tenant's notifications on it (names need the NER).
    enrich_insecure_channels: dict[str, tuple[str, ...]] = {}
    # Region for phone numbers written without a country code (ISO 3166-1 alpha-2).
    enrich_phone_region: str = "US"
    enrich_batch_max: int = Field(32, ge=1)
    enrich_batch_wait_ms: float = Field(0.0, ge=0)
    # Requests the intake and dispatch stages work on at once when tenants' notifications are
    # enriched (enrich_tenants or enrich_insecure_channels set): the micro-batcher can only
    # batch the model calls of requests in flight together. 1 elsewhere: one at a time.
    enrich_concurrency: int = Field(8, ge=1, le=256)

    def routing_concurrency(self) -> int:
        """Actors of the intake and dispatch agents (see `enrich_concurrency`)."""
        enriching = bool(self.enrich_tenants or self.enrich_insecure_channels)
        return self.enrich_concurrency if enriching else 1
    # Metrics (streams/metrics, agents/observe.py): `/metrics` on `web_port`.
    # Consumer lag is read from the broker this often (0 turns the reads off).
    metrics_lag_interval_s: float = Field(5.0, ge=0)
    # tenant_id label values: these tenants only, or else the first `metrics_tenant_limit`
    # a worker sees; every other tenant is counted as `_other` (bounded series).
    metrics_tenants: tuple[str, ...] = ()
    metrics_tenant_limit: int = Field(100, ge=0)
    # Most circuit-breaker series reported (webhook breakers are one per receiving host).
    metrics_breaker_limit: int = Field(50, ge=1)
    # Deployment: the worker's web server (/health, /ready) listens on loopback unless a
    # container opens it ("0.0.0.0") for its probes and scrapes.
    web_host: str = "127.0.0.1"

    # HTTP API (streams/api, `tidings api`): a separate ASGI app, one process per replica.
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=0, le=65535)
    # Tenants' API keys, SHA-256 hashed at rest (`tidings api-keys create` adds one).
    api_keys_file: Path = Path(".cache/api-keys.json")
    # The replica's RocksDB view of the status and idempotency topics (rebuilt when lost).
    api_data_dir: Path = Path(".cache/api")
    api_publish_timeout_s: float = Field(10.0, gt=0)
    # How long an Idempotency-Key is honoured; the pipeline's dedup window by default.
    api_idempotency_window_s: float | None = Field(None, gt=0)
    # Analytics and the runaway guard (agents/analytics.py, agents/runaway.py).
    # Windowed statistics per tenant and channel, in tumbling windows of this size; the
    # windows' changelog (what `tidings insights` reads) keeps them this long.
    analytics_window_s: float = Field(60.0, ge=1)
    analytics_retention_s: float = Field(7 * 24 * 3600, gt=0)
    # Anomaly detection on those windows: EWMA mean and variance with this smoothing factor,
    # a z-score threshold, and no verdict until `warmup` windows have been seen.
    analytics_alpha: float = Field(0.1, gt=0, le=1)
    analytics_z: float = Field(4.0, gt=0)
    analytics_warmup_windows: int = Field(10, ge=1)
    # Fewer events than this in a window are too few to call anything about it.
    analytics_min_count: int = Field(10, ge=1)
    # The runaway guard in intake: a tenant whose accepted requests per window (on one
    # partition) are `guard_z` deviations above its baseline, and whose estimated rate across
    # every partition is at least `guard_min_rate_per_s`, has its new requests held.
    guard_enabled: bool = True
    guard_disabled_tenants: tuple[str, ...] = ()
    guard_window_s: float = Field(10.0, ge=0.1)
    guard_alpha: float = Field(0.1, gt=0, le=1)
    guard_z: float = Field(6.0, gt=0)
    guard_min_rate_per_s: float = Field(20.0, gt=0)
    guard_warmup_windows: int = Field(6, ge=1)
    # Held requests are released automatically after this many windows back under the bound;
    # 0 leaves every release to an operator (`tidings hold release`).
    guard_clear_windows: int = Field(3, ge=0)
    # Rules and preferences (issue 4).
    # Categories users cannot opt out of (account security, password resets, legal notices).
    preferences_required_categories: tuple[str, ...] = ("security",)
    # Signs the one-click unsubscribe tokens in List-Unsubscribe URLs (RFC 8058). Without it
    # emails carry no token and the endpoint refuses every request.
    unsubscribe_secret: SecretStr | None = None
    # A token stays valid this long after the email was sent.
    unsubscribe_token_ttl_s: int = Field(60 * 24 * 3600, ge=60)
    # Templates and rendering (issue 4, agents/render.py). Each render runs in a child
    # process (`process`) that is killed past the timeout; `inline` renders in the worker
    # itself (no time limit: for benchmarks and tests of the pure path only).
    render_isolation: Literal["process", "inline"] = "process"
    render_timeout_s: float = Field(2.0, gt=0)
    render_max_memory_mb: int = Field(1024, ge=128)
    render_max_output_chars: int = Field(256 * 1024, ge=1024)

    @field_validator("enabled_channels")
    @classmethod
    def _known_channels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(CHANNELS))
        if unknown:
            raise ValueError(f"unknown channels {unknown}; known: {list(CHANNELS)}")
        return value

    @field_validator("retry_tiers_s")
    @classmethod
    def _increasing_tiers(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(b <= a for a, b in zip(value, value[1:], strict=False)):
            raise ValueError("retry tiers must be a non-empty, strictly increasing list")
        # Each tier is a topic named after its delay (`5s`, `30m`): whole seconds keep the
        # names distinct.
        if any(delay < 1 or delay != int(delay) for delay in value):
            raise ValueError("retry tiers are whole numbers of seconds, at least 1")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _standard_webhooks_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        raw = value.get_secret_value()
        if not raw.startswith("whsec_"):
            raise ValueError("must be a Standard Webhooks secret: 'whsec_' + base64")
        try:
            key = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
        except ValueError as exc:
            raise ValueError("the part after 'whsec_' is not valid base64") from exc
        # Standard Webhooks: secrets are 24 to 64 bytes of randomness.
        if not 24 <= len(key) <= 64:
            raise ValueError(f"the key is {len(key)} bytes; Standard Webhooks asks for 24-64")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("TIDINGS_CONFIG_FILE")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"

    def webhook_key(self) -> str:
        if self.webhook_secret is None:
            raise ConfigError(
                "TIDINGS_WEBHOOK_SECRET is not set; the webhook channel signs every delivery "
                "(generate one with `tidings secret`)"
            )
        return self.webhook_secret.get_secret_value()


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning pydantic's report into one `ConfigError` naming each bad field."""
    config_file = os.environ.get("TIDINGS_CONFIG_FILE")
    if config_file and not Path(config_file).is_file():
        raise ConfigError(f"TIDINGS_CONFIG_FILE: {config_file} is not a file")
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"TIDINGS_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    except SettingsError as exc:
        # A list or tuple setting given as something other than JSON, e.g. `a,b`.
        raise ConfigError(f"invalid settings: {exc} (lists are JSON: '[\"a\", \"b\"]')"
                          ) from None
    except (yaml.YAMLError, ValueError) as exc:
        # Only the YAML file can raise these: it does not parse, or is not a mapping.
        raise ConfigError(f"TIDINGS_CONFIG_FILE: {config_file} is not a YAML mapping: "
                          f"{exc}") from None
