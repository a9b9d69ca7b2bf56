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

from connectors import webhook
from connectors.verdict import Verdict
from streams.errors import ConfigError
from streams.settings import Settings


class Channel(Protocol):
    async def send(self, message: Mapping[str, Any]) -> Verdict: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class ChannelSpec:
    build: Callable[[Settings, httpx.AsyncClient], Channel]
    endpoint: Callable[[Mapping[str, Any]], str]


class _WebhookChannel:
    def __init__(self, settings: Settings, client: httpx.AsyncClient) -> None:
        self._client = client
        self._config = webhook.WebhookConfig(
            settings.webhook_key(), timeout_s=settings.webhook_timeout_s
        )

    async def send(self, message: Mapping[str, Any]) -> Verdict:
        return await webhook.deliver(self._client, message, self._config)

    async def aclose(self) -> None:
        return None


def _webhook_endpoint(message: Mapping[str, Any]) -> str:
    # One breaker per receiving host: one customer's outage must not stop the others.
    url = message["recipient"].get("webhook_url") or ""
    return f"webhook:{urlsplit(url).netloc}"


CHANNELS: dict[str, ChannelSpec] = {
    "webhook": ChannelSpec(_WebhookChannel, _webhook_endpoint),
}


def check_channels(settings: Settings) -> None:
    """Fail at start-up, not per message: every enabled channel has a connector and config."""
    missing = sorted(set(settings.enabled_channels) - set(CHANNELS))
    if missing:
        raise ConfigError(f"no connector for channels {missing}; available: {sorted(CHANNELS)}")
    if "webhook" in settings.enabled_channels:
        settings.webhook_key()
