"""JSON log records: bound ids, trace ids, masking, exceptions, stdlib and structlog alike."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from streams import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.json_formatter())
    logger = logging.getLogger("tidings.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logs.clear_ids()


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_stdlib_record_is_one_json_line_with_the_bound_ids(captured: io.StringIO) -> None:
    logs.bind_ids({"tenant_id": "acme", "notification_id": "ntf_1", "delivery_id": "dlv_1",
                   "channel": "email", "recipient": {"email": "ann@example.com"}})
    logging.getLogger("tidings.test-logs").warning("no answer from %s", "ann@example.com")
    (record,) = records(captured)
    assert record["event"] == "no answer from ***@example.com"
    assert (record["tenant_id"], record["notification_id"], record["delivery_id"],
            record["channel"]) == ("acme", "ntf_1", "dlv_1", "email")
    assert "recipient" not in record  # only the ids are bound
    assert (record["level"], record["logger"]) == ("warning", "tidings.test-logs")
    assert str(record["timestamp"]).endswith("Z")


def test_exceptions_are_rendered_and_masked(captured: io.StringIO) -> None:
    log = logging.getLogger("tidings.test-logs")
    try:
        raise ValueError("phone '+14155550123' and token fcm:abc-123 are invalid")
    except ValueError:
        log.exception("send failed")
    (record,) = records(captured)
    text = json.dumps(record)
    assert "4155550123" not in text and "abc-123" not in text
    assert "Traceback" in str(record["exception"])
    assert "+***23" in str(record["exception"])


def test_ids_are_cleared_between_events(captured: io.StringIO) -> None:
    log = logging.getLogger("tidings.test-logs")
    logs.bind_ids({"notification_id": "ntf_1"})
    log.info("first")
    logs.clear_ids()
    log.info("second")
    first, second = records(captured)
    assert first["notification_id"] == "ntf_1"
    assert "notification_id" not in second


def test_structlog_loggers_share_the_format(captured: io.StringIO) -> None:
    structlog.configure(
        processors=[*logs._shared_processors(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    try:
        structlog.get_logger("tidings.test-logs").info(
            "rotated", webhook_secret="whsec_abc", tenant_id="acme")
    finally:
        structlog.reset_defaults()
    (record,) = records(captured)
    assert record["webhook_secret"] == "[masked]"
    assert (record["event"], record["tenant_id"]) == ("rotated", "acme")


def test_logging_config_puts_one_json_handler_at_the_root() -> None:
    config = logs.logging_config("warn")
    assert config["root"] == {"level": "WARNING", "handlers": ["json"]}
    assert config["formatters"]["json"]["()"] == "streams.logs.json_formatter"
