"""The worker app for benchmark runs that deliver to the local receiver on 127.0.0.1.

The SSRF guard (connectors/ssrf.py) refuses loopback addresses unless a WebhookConfig's
`allowed_networks` opens them, and until Settings has a `webhook_allowed_networks` field
(TIDINGS_WEBHOOK_ALLOWED_NETWORKS) the worker builds its WebhookConfig without them. Until
then this factory — selected with TIDINGS_WORKER_APP, which `tidings worker` honours — gives
every WebhookConfig the networks named in that variable, and is otherwise the worker's own
`agents.worker.build_app`. Once the setting exists it changes nothing.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from agents import worker
from streams.settings import Settings


def build_app(settings: Settings | None = None) -> Any:
    allowed = tuple(json.loads(os.environ.get("TIDINGS_WEBHOOK_ALLOWED_NETWORKS", "[]")))
    if allowed and "webhook_allowed_networks" not in Settings.model_fields:
        from connectors import webhook

        original = webhook.WebhookConfig

        @functools.wraps(original, updated=())
        def with_allowed_networks(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("allowed_networks", allowed)
            return original(*args, **kwargs)

        webhook.WebhookConfig = with_allowed_networks  # type: ignore[misc, assignment]
    return worker.build_app(settings)
