"""The channel registry: each channel's connector, configured from settings.

Registered explicitly (not discovered), so what a worker can deliver is what is listed in
`CHANNELS`. Each entry builds an object with `send(message) -> Verdict` and `aclose()`, and
names the provider endpoint a message goes to (the circuit breaker's key).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from connectors import apns, email, fcm, slack, sms, webhook
from connectors.verdict import InvalidMessage, Verdict
from streams.errors import ConfigError
from streams.settings import Settings


class Channel(Protocol):
    async def send(self, message: Mapping[str, Any]) -> Verdict: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class ChannelSpec:
    build: Callable[[Settings, httpx.AsyncClient], Channel]
    endpoint: Callable[[Mapping[str, Any]], str]


def _webhook_config(settings: Settings) -> webhook.WebhookConfig:
    previous = tuple(s.get_secret_value() for s in settings.webhook_previous_secrets)
    return webhook.WebhookConfig(
        secrets=(settings.webhook_key(), *previous),
        timeout_s=settings.webhook_timeout_s,
        ssrf_guard=settings.webhook_ssrf_guard,
        allowed_networks=settings.webhook_allowed_networks,
    )


def _webhook(settings: Settings, client: httpx.AsyncClient) -> Channel:
    # Its own client: the SSRF guard resolves each host once, checks the addresses and
    # connects to the checked one, so it owns the connection pool (connectors/ssrf.py).
    del client
    return webhook.WebhookChannel(_webhook_config(settings))


def _webhook_endpoint(message: Mapping[str, Any]) -> str:
    # One breaker per receiving host: one customer's outage must not stop the others.
    url = message["recipient"].get("webhook_url") or ""
    return f"webhook:{urlsplit(url).netloc}"


def _secret(value: SecretStr | None, variable: str) -> str:
    if value is None:
        raise ConfigError(f"{variable} is not set")
    return value.get_secret_value()


def _email_config(settings: Settings) -> email.EmailConfig:
    if not settings.smtp_from:
        raise ConfigError("TIDINGS_SMTP_FROM is not set")
    return email.EmailConfig(
        from_address=settings.smtp_from,
        host=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else "",
        tls_mode=settings.smtp_tls_mode,
        validate_certs=settings.smtp_validate_certs,
        ca_file=settings.smtp_ca_file,
        timeout_s=settings.smtp_timeout_s,
        max_connections=settings.smtp_max_connections,
        unsubscribe_url=settings.email_unsubscribe_url,
        unsubscribe_token=_unsubscribe_signer(settings),
    )


def _unsubscribe_signer(settings: Settings
                        ) -> Callable[[Mapping[str, Any]], str | None] | None:
    # One-click unsubscribe tokens (issue 4): signed only when a secret is configured.
    if settings.unsubscribe_secret is None:
        return None
    from streams.unsubscribe import UnsubscribeTokens

    return UnsubscribeTokens.from_settings(settings).signer(
        settings.preferences_required_categories)


def _email(settings: Settings, client: httpx.AsyncClient) -> Channel:
    return email.EmailChannel(_email_config(settings))


def _twilio_config(settings: Settings) -> sms.TwilioConfig:
    return sms.TwilioConfig(
        account_sid=settings.twilio_account_sid or "",
        auth_token=_secret(settings.twilio_auth_token, "TIDINGS_TWILIO_AUTH_TOKEN"),
        from_number=settings.twilio_from_number,
        messaging_service_sid=settings.twilio_messaging_service_sid,
        base_url=settings.twilio_base_url,
        status_callback=settings.twilio_status_callback,
        timeout_s=settings.twilio_timeout_s,
    )


def _sms(settings: Settings, client: httpx.AsyncClient) -> Channel:
    return sms.TwilioChannel(_twilio_config(settings), client)


def _slack_config(settings: Settings) -> slack.SlackConfig:
    token = settings.slack_bot_token
    return slack.SlackConfig(
        bot_token=token.get_secret_value() if token else "",
        base_url=settings.slack_base_url,
        webhook_url_prefixes=settings.slack_webhook_url_prefixes,
        timeout_s=settings.slack_timeout_s,
    )


def _slack(settings: Settings, client: httpx.AsyncClient) -> Channel:
    return slack.SlackChannel(_slack_config(settings), client)


def _apns_config(settings: Settings) -> apns.ApnsConfig:
    return apns.ApnsConfig(
        team_id=settings.apns_team_id or "",
        key_id=settings.apns_key_id or "",
        private_key=_secret(settings.apns_private_key, "TIDINGS_APNS_PRIVATE_KEY"),
        topic=settings.apns_topic or "",
        base_url=settings.apns_base_url,
        ttl_s=settings.apns_ttl_s,
        ca_file=settings.apns_ca_file,
        timeout_s=settings.apns_timeout_s,
    )


def _fcm_config(settings: Settings) -> fcm.FcmConfig:
    return fcm.FcmConfig(
        service_account=_secret(settings.fcm_service_account, "TIDINGS_FCM_SERVICE_ACCOUNT"),
        base_url=settings.fcm_base_url,
        token_uri=settings.fcm_token_uri,
        timeout_s=settings.fcm_timeout_s,
    )


class _PushChannel:
    """Push goes to APNs for `apns:` tokens and to FCM for the rest (`fcm:` or bare)."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient) -> None:
        self._providers: dict[str, Channel] = {}
        if settings.apns_private_key is not None:
            self._providers["apns"] = apns.ApnsChannel(_apns_config(settings), client)
        if settings.fcm_service_account is not None:
            self._providers["fcm"] = fcm.FcmChannel(_fcm_config(settings), client)

    async def send(self, message: Mapping[str, Any]) -> Verdict:
        provider = _push_provider(message)
        channel = self._providers.get(provider)
        if channel is None:
            raise InvalidMessage(f"no {provider} push provider is configured for this token")
        return await channel.send(message)

    async def aclose(self) -> None:
        for channel in self._providers.values():
            await channel.aclose()


def _push_provider(message: Mapping[str, Any]) -> str:
    tokens = message["recipient"].get("push_tokens") or [""]
    return "apns" if tokens[0].startswith("apns:") else "fcm"


def _slack_endpoint(message: Mapping[str, Any]) -> str:
    address = message["recipient"].get("slack") or ""
    # Incoming webhooks each have their own URL; the Web API is one endpoint.
    return f"slack:{urlsplit(address).netloc}" if "://" in address else "slack:web-api"


CHANNELS: dict[str, ChannelSpec] = {
    "webhook": ChannelSpec(_webhook, _webhook_endpoint),
    "slack": ChannelSpec(_slack, _slack_endpoint),
    "sms": ChannelSpec(_sms, lambda message: "sms:twilio"),
    "email": ChannelSpec(_email, lambda message: "email:smtp"),
    "push": ChannelSpec(_PushChannel, lambda message: f"push:{_push_provider(message)}"),
}


def check_channels(settings: Settings) -> None:
    """Fail at start-up, not per message: every enabled channel has a connector and config."""
    missing = sorted(set(settings.enabled_channels) - set(CHANNELS))
    if missing:
        raise ConfigError(f"no connector for channels {missing}; available: {sorted(CHANNELS)}")
    try:
        if "webhook" in settings.enabled_channels:
            _webhook_config(settings)
        if "email" in settings.enabled_channels:
            _email_config(settings)
        if "sms" in settings.enabled_channels:
            _twilio_config(settings)
        if "slack" in settings.enabled_channels:
            _slack_config(settings)
        if "push" in settings.enabled_channels:
            if settings.apns_private_key is None and settings.fcm_service_account is None:
                raise ConfigError("the push channel needs TIDINGS_FCM_SERVICE_ACCOUNT and/or "
                                  "TIDINGS_APNS_PRIVATE_KEY")
            if settings.apns_private_key is not None:
                _apns_config(settings)
            if settings.fcm_service_account is not None:
                _fcm_config(settings)
    except ValueError as exc:
        raise ConfigError(f"invalid channel settings: {exc}") from None
