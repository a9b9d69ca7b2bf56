import base64
import email.utils
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest

from connectors.sms import (
    BODY_MAX_CHARS,
    FailoverSmsChannel,
    TwilioChannel,
    TwilioConfig,
    build_request,
    classify,
    e164,
)
from connectors.verdict import InvalidMessage, Outcome, Verdict

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
SERVICE_SID = "MG" + "fedcba9876543210" * 2
TOKEN = "secret-auth-token"
CONFIG = TwilioConfig(account_sid=ACCOUNT_SID, auth_token=TOKEN, from_number="+15005550006")
NOW = 1_700_000_000.0
EMOJI = "\N{GRINNING FACE}"


def make_message(**overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "delivery_id": "dlv_0123456789abcdef0123456789abcdef",
        "notification_id": "ntf_1",
        "tenant_id": "acme",
        "channel": "sms",
        "category": "security",
        "priority": "high",
        "recipient": {"user_id": "u-42", "phone": "+14155552671", "push_tokens": []},
        "title": "Sign-in code",
        "body": "Your code is 482910.",
        "data": {},
        "metadata": {},
        "attempt": 1,
        "created_at": 1_699_999_999_123,
        "not_before": 0,
        "last_error": None,
    }
    message.update(overrides)
    return message


def form_of(content: bytes) -> dict[str, list[str]]:
    return parse_qs(content.decode("ascii"), keep_blank_values=True, strict_parsing=True)


def twilio_error(code: int, message: str, status: int) -> bytes:
    return orjson.dumps(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
    )


# -- config ----------------------------------------------------------------------


def test_config_defaults_and_repr_hides_the_token() -> None:
    assert CONFIG.base_url == "https://api.twilio.com"
    assert CONFIG.status_callback is None
    assert CONFIG.timeout_s > 0
    assert TOKEN not in repr(CONFIG)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"account_sid": "AC123"}, "account_sid"),
        ({"account_sid": "XX" + "0" * 32}, "account_sid"),
        ({"account_sid": "AC" + "0" * 32 + "/../x"}, "account_sid"),
        ({"auth_token": ""}, "auth_token"),
        ({"from_number": None}, "from_number or messaging_service_sid"),
        ({"from_number": "4155552671"}, "not an E.164 number"),
        ({"from_number": "+1415555267"}, "not an E.164 number"),
        ({"from_number": "Way Too Long Sender"}, "alphanumeric sender ID"),
        ({"from_number": "123456789"}, "short code"),
        ({"from_number": "Acme-Bank"}, "alphanumeric sender ID"),
        ({"messaging_service_sid": "MG123"}, "messaging_service_sid"),
        ({"base_url": "api.twilio.com"}, "base_url"),
        ({"status_callback": "ftp://hooks.example.com/sms"}, "status_callback"),
        ({"status_callback": "https://my_host.example.com/sms"}, "'_'"),
        ({"timeout_s": 0}, "timeout_s"),
    ],
)
def test_config_is_validated(overrides: dict[str, Any], error: str) -> None:
    fields: dict[str, Any] = {
        "account_sid": ACCOUNT_SID, "auth_token": TOKEN, "from_number": "+15005550006",
    } | overrides
    with pytest.raises(ValueError, match=error):
        TwilioConfig(**fields)


@pytest.mark.parametrize("sender", ["+447911123456", "Acme", "ACME Bank 1", "12345", "898211"])
def test_config_accepts_every_kind_of_sender(sender: str) -> None:
    assert TwilioConfig(ACCOUNT_SID, TOKEN, from_number=sender).from_number == sender


def test_config_with_only_a_messaging_service() -> None:
    config = TwilioConfig(ACCOUNT_SID, TOKEN, messaging_service_sid=SERVICE_SID)
    assert config.from_number is None


# -- E.164 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "expected"),
    [
        ("+14155552671", "+14155552671"),
        ("+1 (415) 555-2671", "+14155552671"),
        ("+44 7911 123456", "+447911123456"),
        ("+81 90-1234-5678", "+819012345678"),
        ("+33612345678", "+33612345678"),
    ],
)
def test_e164_normalises_international_numbers(phone: str, expected: str) -> None:
    assert e164(phone) == expected


@pytest.mark.parametrize(
    ("phone", "error"),
    [
        ("415-555-2671", "not an international number"),  # no country code
        ("07911 123456", "not an international number"),
        ("+999123", "not an international number"),  # no such country code
        ("+1415555267", "not a valid phone number"),  # a digit short
        ("+4479111234567", "not a valid phone number"),  # a digit long
        ("+14155552671 ext. 12", "extension"),
        ("not a number", "not an international number"),
    ],
)
def test_e164_refuses(phone: str, error: str) -> None:
    with pytest.raises(InvalidMessage, match=error):
        e164(phone)


# -- build_request -----------------------------------------------------------------


def test_request() -> None:
    request = build_request(make_message(), CONFIG)

    assert request.method == "POST"
    assert request.url == (
        f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    )
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["accept"] == "application/json"
    scheme, credentials = request.headers["authorization"].split(" ")
    assert scheme == "Basic"
    assert base64.b64decode(credentials).decode() == f"{ACCOUNT_SID}:{TOKEN}"
    assert form_of(request.content) == {
        "To": ["+14155552671"],
        "From": ["+15005550006"],
        "Body": ["Sign-in code\nYour code is 482910."],
    }


@pytest.mark.parametrize(
    ("title", "body", "text"),
    [
        ("Title", "Body", "Title\nBody"),
        (None, "Body only", "Body only"),
        ("Title only", None, "Title only"),
        ("", "  Body  ", "Body"),
        ("  Title  ", "\n", "Title"),
        ("Title", "line 1\nline 2\n", "Title\nline 1\nline 2"),
        ("Prix: 5 €", "Ça marche " + EMOJI, "Prix: 5 €\nÇa marche " + EMOJI),
    ],
)
def test_body_is_title_and_body(title: str | None, body: str | None, text: str) -> None:
    request = build_request(make_message(title=title, body=body), CONFIG)

    assert form_of(request.content)["Body"] == [text]


def test_phone_is_sent_in_e164() -> None:
    message = make_message(recipient={"user_id": "u", "phone": "+1 (415) 555-2671"})

    assert form_of(build_request(message, CONFIG).content)["To"] == ["+14155552671"]


def test_messaging_service_instead_of_from() -> None:
    config = TwilioConfig(ACCOUNT_SID, TOKEN, messaging_service_sid=SERVICE_SID)

    form = form_of(build_request(make_message(), config).content)

    assert form["MessagingServiceSid"] == [SERVICE_SID]
    assert "From" not in form


def test_messaging_service_and_from_together() -> None:
    config = TwilioConfig(ACCOUNT_SID, TOKEN, from_number="Acme", messaging_service_sid=SERVICE_SID)

    form = form_of(build_request(make_message(), config).content)

    assert form["From"] == ["Acme"]
    assert form["MessagingServiceSid"] == [SERVICE_SID]


def test_status_callback_carries_the_delivery_id() -> None:
    config = TwilioConfig(
        ACCOUNT_SID, TOKEN, from_number="Acme",
        status_callback="https://hooks.example.com/twilio/status?tenant=acme",
    )

    callback = form_of(build_request(make_message(), config).content)["StatusCallback"][0]

    parts = urlsplit(callback)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https", "hooks.example.com", "/twilio/status",
    )
    assert parse_qs(parts.query) == {
        "tenant": ["acme"], "delivery_id": ["dlv_0123456789abcdef0123456789abcdef"],
    }


def test_base_url_points_at_an_emulator() -> None:
    config = TwilioConfig(ACCOUNT_SID, TOKEN, from_number="Acme", base_url="http://127.0.0.1:8091/")

    request = build_request(make_message(), config)

    assert request.url == f"http://127.0.0.1:8091/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"


@pytest.mark.parametrize(
    "text",
    [
        "a" * BODY_MAX_CHARS,
        EMOJI * (BODY_MAX_CHARS // 2),
        "€" * BODY_MAX_CHARS,  # two septets each on the air, but one character to Twilio
    ],
)
def test_body_at_the_limit_is_sent(text: str) -> None:
    request = build_request(make_message(title=None, body=text), CONFIG)

    assert form_of(request.content)["Body"] == [text]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"recipient": None}, "no phone"),
        ({"recipient": {"user_id": "u"}}, "no phone"),
        ({"recipient": {"user_id": "u", "phone": None}}, "no phone"),
        ({"recipient": {"user_id": "u", "phone": ""}}, "no phone"),
        ({"recipient": {"phone": "4155552671"}}, "not an international number"),
        ({"recipient": {"phone": "+1415555267"}}, "not a valid phone number"),
        ({"recipient": {"phone": "+14155552671;ext=1"}}, "extension"),
        ({"title": None, "body": None}, "no title or body"),
        ({"title": " ", "body": "\n\t"}, "no title or body"),
        ({"title": None, "body": "a" * (BODY_MAX_CHARS + 1)}, "1601 characters"),
        ({"title": "a" * 800, "body": "b" * 800}, "1601 characters"),
        ({"title": None, "body": EMOJI * 801}, "1602 characters"),
    ],
)
def test_invalid_message(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        build_request(make_message(**overrides), CONFIG)


def test_status_callback_needs_a_delivery_id() -> None:
    config = TwilioConfig(ACCOUNT_SID, TOKEN, from_number="Acme",
                          status_callback="https://hooks.example.com/s")
    with pytest.raises(InvalidMessage, match="delivery_id"):
        build_request(make_message(delivery_id=None), config)


def test_status_callback_too_long() -> None:
    config = TwilioConfig(ACCOUNT_SID, TOKEN, from_number="Acme",
                          status_callback="https://hooks.example.com/" + "x" * 3990)
    with pytest.raises(InvalidMessage, match="StatusCallback URL is"):
        build_request(make_message(), config)


# -- classify ----------------------------------------------------------------------

CREATED = orjson.dumps({"sid": "SM" + "a" * 32, "status": "queued", "num_segments": "1"})
HTML_502 = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


# (status, headers, body) -> (outcome, retry_after, reason fragment). One row per
# documented response; sources in connectors/sms.py beside each rule.
@pytest.mark.parametrize(
    ("status", "headers", "body", "outcome", "retry_after", "reason"),
    [
        # 201 Created: the Message resource, queued.
        (201, {}, CREATED, Outcome.DELIVERED, None, "sid=SM" + "a" * 32),
        (200, {}, b"", Outcome.DELIVERED, None, ""),
        # 20429 Too many requests: never processed, safe to retry; Retry-After honoured.
        (429, {"Retry-After": "3"}, twilio_error(20429, "Too Many Requests", 429),
         Outcome.RETRY, 3.0, "rate limited; Twilio 20429: Too Many Requests"),
        (429, {}, b"", Outcome.RETRY, None, "HTTP 429: rate limited"),
        (429, {"retry-after": email.utils.formatdate(NOW + 60, usegmt=True)}, b"",
         Outcome.RETRY, 60.0, "rate limited"),
        # 21611 sender queue over 10 hours long.
        (400, {}, twilio_error(21611, "This 'From' number has exceeded the maximum number "
                               "of queued messages", 400),
         Outcome.RETRY, None, "sender queue full; Twilio 21611"),
        # 20500 / 20503 and gateway errors: Twilio-side, transient.
        (500, {}, twilio_error(20500, "An internal server error has occurred", 500),
         Outcome.RETRY, None, "Twilio server error; Twilio 20500"),
        (503, {"Retry-After": "10"}, twilio_error(20503, "Service Unavailable", 503),
         Outcome.RETRY, 10.0, "Twilio 20503: Service Unavailable"),
        (502, {}, HTML_502, Outcome.RETRY, None, "502 Bad Gateway"),
        (500, {}, orjson.dumps({"message": "Internal Server Error", "status": 500}),
         Outcome.RETRY, None, "HTTP 500: Twilio server error: Internal Server Error"),
        (408, {}, b"", Outcome.RETRY, None, "request timeout"),
        # 21610 STOP: the recipient opted out.
        (400, {}, twilio_error(21610, "Attempt to send to unsubscribed recipient", 400),
         Outcome.ADDRESS_INVALID, None, "unsubscribed (STOP); Twilio 21610"),
        # 21211 invalid To, 21614 not a mobile number.
        (400, {}, twilio_error(21211, "The 'To' number +1415 is not a valid phone number.", 400),
         Outcome.REJECTED, None, "invalid 'To' number; Twilio 21211: The 'To' number +1415"),
        (400, {}, twilio_error(21614, "'To' number is not a valid mobile number", 400),
         Outcome.REJECTED, None, "not a mobile number; Twilio 21614"),
        # 20003 authentication, 20403 account suspended.
        (401, {}, twilio_error(20003, "Authenticate", 401),
         Outcome.REJECTED, None, "authentication failed; Twilio 20003: Authenticate"),
        (403, {}, twilio_error(20403, "Forbidden", 403),
         Outcome.REJECTED, None, "account forbidden; Twilio 20403"),
        # Sender and routing problems.
        (400, {}, twilio_error(21603, "A 'From' or 'MessagingServiceSid' parameter is "
                               "required to send a message.", 400),
         Outcome.REJECTED, None, "no sender; Twilio 21603"),
        (400, {}, twilio_error(21606, "The 'From' phone number provided is not valid", 400),
         Outcome.REJECTED, None, "Twilio 21606"),
        (400, {}, twilio_error(21701, "The Messaging Service does not exist", 400),
         Outcome.REJECTED, None, "Twilio 21701"),
        (400, {}, twilio_error(21408, "Permission to send an SMS has not been enabled", 400),
         Outcome.REJECTED, None, "region not enabled for this account; Twilio 21408"),
        (400, {}, twilio_error(21612, "The 'To' phone number is not currently reachable", 400),
         Outcome.REJECTED, None, "Twilio 21612"),
        (400, {}, twilio_error(21617, "The concatenated message body exceeds the 1600 "
                               "character limit.", 400),
         Outcome.REJECTED, None, "body too long; Twilio 21617"),
        # Any other 4xx: rejected, with Twilio's code and message.
        (400, {}, twilio_error(21602, "Message body is required.", 400),
         Outcome.REJECTED, None, "HTTP 400: rejected by Twilio; Twilio 21602: Message body is"),
        (404, {}, twilio_error(20404, "The requested resource was not found", 404),
         Outcome.REJECTED, None, "Twilio 20404: The requested resource was not found"),
        (400, {}, b"not json", Outcome.REJECTED, None, "HTTP 400: rejected by Twilio: not json"),
        (301, {"Location": "https://example.com"}, b"", Outcome.REJECTED, None, "redirect"),
    ],
)
def test_classify(
    status: int,
    headers: dict[str, str],
    body: bytes,
    outcome: Outcome,
    retry_after: float | None,
    reason: str,
) -> None:
    verdict = classify(status, headers, body, now=NOW)

    assert verdict.outcome is outcome
    assert verdict.status_code == status
    assert verdict.retry_after == retry_after
    assert reason in verdict.reason


def test_classify_quotes_a_long_body_briefly() -> None:
    verdict = classify(400, {}, b"x" * 100_000)

    assert len(verdict.reason) < 300


def test_classify_takes_the_code_over_the_status() -> None:
    # A 21610 under an unexpected status is still the recipient's STOP.
    verdict = classify(500, {}, twilio_error(21610, "unsubscribed", 500))

    assert verdict.outcome is Outcome.ADDRESS_INVALID


# -- TwilioChannel over httpx.MockTransport -----------------------------------------


async def test_channel_sends_and_classifies() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, content=CREATED)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        channel = TwilioChannel(CONFIG, client)
        verdict = await channel.send(make_message())
        await channel.aclose()
        assert not client.is_closed  # the caller's client stays open

    assert verdict == Verdict(Outcome.DELIVERED, "sid=SM" + "a" * 32, status_code=201)
    [request] = seen
    assert request.url.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert form_of(request.content)["To"] == ["+14155552671"]


async def test_channel_turns_network_failures_into_retries() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        verdict = await TwilioChannel(CONFIG, client).send(make_message())

    assert verdict.outcome is Outcome.RETRY
    assert "ConnectError" in verdict.reason


async def test_channel_raises_invalid_message_before_sending() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing should be sent")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(InvalidMessage):
            await TwilioChannel(CONFIG, client).send(make_message(recipient={"phone": "123"}))


async def test_channel_closes_the_client_it_made() -> None:
    channel = TwilioChannel(CONFIG)
    await channel.aclose()
    assert channel._client.is_closed


# -- FailoverSmsChannel --------------------------------------------------------------


class Scripted:
    """An SMS channel answering with the verdicts it is given, in order."""

    def __init__(self, *verdicts: Verdict | Exception) -> None:
        self.verdicts = list(verdicts)
        self.sent: list[Mapping[str, Any]] = []
        self.closed = False

    async def send(self, message: Mapping[str, Any]) -> Verdict:
        self.sent.append(message)
        verdict = self.verdicts.pop(0)
        if isinstance(verdict, Exception):
            raise verdict
        return verdict

    async def aclose(self) -> None:
        self.closed = True


DELIVERED = Verdict(Outcome.DELIVERED, "sid=SM1", status_code=201)
RATE_LIMITED = Verdict.retry("HTTP 429: rate limited", retry_after=30.0, status_code=429)
DOWN = Verdict.retry("HTTP 503: Twilio server error", status_code=503)
STOPPED = Verdict.address_invalid("HTTP 400: recipient unsubscribed (STOP)", status_code=400)
REJECTED = Verdict.rejected("HTTP 401: authentication failed", status_code=401)


@pytest.mark.parametrize("first", [DELIVERED, STOPPED, REJECTED])
async def test_failover_keeps_a_final_verdict_of_the_first_channel(first: Verdict) -> None:
    primary, secondary = Scripted(first), Scripted()

    verdict = await FailoverSmsChannel([primary, secondary]).send(make_message())

    assert verdict == first
    assert secondary.sent == []


@pytest.mark.parametrize("second", [DELIVERED, STOPPED, REJECTED])
async def test_failover_moves_on_after_a_retry(second: Verdict) -> None:
    primary, secondary = Scripted(RATE_LIMITED), Scripted(second)

    verdict = await FailoverSmsChannel([primary, secondary]).send(make_message())

    assert (verdict.outcome, verdict.status_code) == (second.outcome, second.status_code)
    assert verdict.reason.startswith("channel 2 after 1 retried")
    assert second.reason in verdict.reason
    assert len(primary.sent) == len(secondary.sent) == 1


async def test_failover_when_every_channel_asks_for_a_retry() -> None:
    channels = [Scripted(RATE_LIMITED), Scripted(Verdict.retry("slow", retry_after=5.0))]

    verdict = await FailoverSmsChannel(channels).send(make_message())

    assert verdict.outcome is Outcome.RETRY
    assert verdict.retry_after == 5.0  # the soonest any channel may be tried again
    assert verdict.reason == "channel 1: HTTP 429: rate limited; channel 2: slow"


async def test_failover_retry_without_a_wait_when_one_channel_gave_none() -> None:
    verdict = await FailoverSmsChannel([Scripted(RATE_LIMITED), Scripted(DOWN)]).send(
        make_message()
    )

    assert verdict.retry_after is None
    assert verdict.status_code == 503


async def test_failover_does_not_catch_invalid_message() -> None:
    primary, secondary = Scripted(InvalidMessage("no phone")), Scripted()

    with pytest.raises(InvalidMessage):
        await FailoverSmsChannel([primary, secondary]).send(make_message())
    assert secondary.sent == []


async def test_failover_closes_every_channel() -> None:
    channels = [Scripted(), Scripted()]

    await FailoverSmsChannel(channels).aclose()

    assert all(channel.closed for channel in channels)


def test_failover_needs_a_channel() -> None:
    with pytest.raises(ValueError, match="at least one"):
        FailoverSmsChannel([])
