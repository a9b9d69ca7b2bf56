"""JSON logs through structlog, for our loggers and every library's (Faust, aiokafka, ...).

One line of JSON per record on stdout: `timestamp`, `level`, `logger`, `event` (the message),
the ids bound to the record being processed (`tenant_id`, `notification_id`, `delivery_id`,
`channel`, `stage`), the OpenTelemetry `trace_id`/`span_id` when a span is current, and
`exception` with the traceback. Stdlib records (`logging.getLogger(...)`) go through the same
processors via structlog's `ProcessorFormatter`, so the whole worker log is one format, and
every record passes the masking processor (streams/redact.py) last before it is rendered.

Ids are bound per event in a context variable: each Faust actor is its own asyncio task with
its own copy of the context, so concurrent deliveries never see each other's ids.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

from streams.redact import redact_processor

LEVELS = {"crit": "CRITICAL", "error": "ERROR", "warn": "WARNING", "info": "INFO",
          "debug": "DEBUG"}
# The ids a record is known by; bound from the message a stage is working on.
ID_FIELDS = ("tenant_id", "notification_id", "delivery_id", "channel")


def add_trace_ids(_logger: Any, _method: str, event: MutableMapping[str, Any]
                  ) -> MutableMapping[str, Any]:
    """Put the current span's ids on the record, so a log line leads to its trace."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


def _shared_processors() -> list[Any]:
    """What both structlog and stdlib records go through before masking and rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
    ]


def _final_processors() -> list[Any]:
    return [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.StackInfoRenderer(),
        # Exceptions become text before masking, so their messages are masked too.
        structlog.processors.format_exc_info,
        structlog.processors.UnicodeDecoder(),
        redact_processor,
        structlog.processors.JSONRenderer(default=str),
    ]


def json_formatter() -> logging.Formatter:
    """The formatter of every handler: shared processors, masking, then one JSON line."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(), processors=_final_processors()
    )


def logging_config(level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` dict: one JSON handler on stdout at the root.

    Faust's worker (mode) applies the dict it is given instead of its coloured console
    handler, so this is also what `tidings worker` hands it.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": "streams.logs.json_formatter"},
        },
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                # The real stdout: mode redirects sys.stdout into logging after setup.
                "stream": "ext://sys.__stdout__",
            },
        },
        "root": {"level": LEVELS.get(level, level.upper()), "handlers": ["json"]},
    }


def configure_logging(level: str = "warn") -> None:
    """Route structlog and the stdlib's logging through the JSON formatter."""
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(logging_config(level))
    logging.captureWarnings(True)
    if sys.__stdout__ is not None and hasattr(sys.__stdout__, "reconfigure"):
        # One record, one line, as soon as it is written (log shippers tail the stream).
        sys.__stdout__.reconfigure(line_buffering=True)


def bind_ids(message: Mapping[str, Any], **extra: Any) -> None:
    """Bind the ids of the message being processed to every log record of this task."""
    structlog.contextvars.bind_contextvars(
        **{name: message[name] for name in ID_FIELDS if message.get(name)}, **extra
    )


def clear_ids() -> None:
    structlog.contextvars.clear_contextvars()
