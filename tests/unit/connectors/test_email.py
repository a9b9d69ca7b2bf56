import email.policy
import ssl
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import aiosmtplib
import pytest

from connectors.email import (
    EmailConfig,
    build_envelope,
    build_message,
    classify_error,
    classify_reply,
)
from connectors.email_message import MAX_MESSAGE_BYTES
from connectors.verdict import InvalidMessage, Outcome, Verdict

CONFIG = EmailConfig(from_address="Tidings <no-reply@example.com>")
DELIVERY_ID = "dlv_0123456789abcdef0123456789abcdef"


def make_message(**overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "delivery_id": DELIVERY_ID,
        "notification_id": "ntf_1",
        "tenant_id": "acme",
        "channel": "email",
        "category": "billing",
        "priority": "normal",
        "recipient": {"user_id": "u-42", "email": "bob@example.com", "push_tokens": []},
        "title": "Invoice paid",
        "body": "Hello Bob,\n\nInvoice #7 was paid.\nThank you!",
        "data": {},
        "metadata": {},
        "attempt": 1,
        "created_at": 1_699_999_999_123,  # 2023-11-14T22:13:19.123Z
    }
    message.update(overrides)
    return message


def recipient(address: Any) -> dict[str, Any]:
    return {"user_id": "u-42", "email": address, "push_tokens": []}


def parse(content: bytes) -> EmailMessage:
    parsed = BytesParser(policy=email.policy.default).parsebytes(content)
    assert isinstance(parsed, EmailMessage)
    return parsed


def parts(message: EmailMessage) -> dict[str, str]:
    return {
        part.get_content_type(): str(part.get_content()).replace("\r\n", "\n")
        for part in message.iter_parts()
    }


# -- build_message ------------------------------------------------------------------


def test_headers() -> None:
    built = build_message(make_message(), CONFIG)

    assert built["From"] == "Tidings <no-reply@example.com>"
    assert built["To"] == "bob@example.com"
    assert built["Subject"] == "Invoice paid"
    assert built["Date"] == "Tue, 14 Nov 2023 22:13:19 +0000"
    assert built["Message-ID"] == f"<{DELIVERY_ID}@example.com>"
    assert built["Auto-Submitted"] == "auto-generated"
    assert built["List-Unsubscribe"] == (
        f"<http://127.0.0.1:6066/v1/unsubscribe?d={DELIVERY_ID}>"
    )
    assert built["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert built["MIME-Version"] == "1.0"


def test_multipart_alternative_with_text_then_html() -> None:
    built = parse(build_message(make_message(), CONFIG).as_bytes())

    assert built.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in built.iter_parts()] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in built.iter_parts())
    assert parts(built)["text/plain"] == "Hello Bob,\n\nInvoice #7 was paid.\nThank you!"


def test_html_part_escapes_the_body_and_makes_paragraphs() -> None:
    body = "Hi <b>Bob</b> & co,\n\n  line one\nline two \n\n\n\"quoted\" 'text'\n"
    built = parse(build_message(make_message(body=body, title="A <title>"), CONFIG).as_bytes())

    html = parts(built)["text/html"]

    assert "<title>A &lt;title&gt;</title>" in html
    assert "<p>Hi &lt;b&gt;Bob&lt;/b&gt; &amp; co,</p>" in html
    assert "<p>line one<br>\nline two</p>" in html
    assert "<p>&quot;quoted&quot; &#x27;text&#x27;</p>" in html
    assert "<b>" not in html


def test_non_ascii_survives_as_7bit() -> None:
    content = build_message(
        make_message(title="Rechnung bezahlt — danke", body="Grüße, Ünïcode ✓"), CONFIG
    ).as_bytes()

    assert content.isascii()
    built = parse(content)
    assert built["Subject"] == "Rechnung bezahlt — danke"
    assert parts(built)["text/plain"] == "Grüße, Ünïcode ✓"
    assert "Grüße, Ünïcode ✓" in parts(built)["text/html"]


def test_lines_are_crlf_terminated_and_short() -> None:
    content = build_message(make_message(body="x" * 5000 + "\n. leading dot"), CONFIG).as_bytes()

    assert b"\n" not in content.replace(b"\r\n", b"")
    lines = content.split(b"\r\n")
    # RFC 5322 §2.1.1: at most 998, and 78 where it can be helped (a URL cannot).
    assert max(len(line) for line in lines) <= 998
    assert all(len(line) <= 78 for line in lines if not line.startswith(b"List-Unsubscribe:"))
    assert parts(parse(content))["text/plain"] == "x" * 5000 + "\n. leading dot"


def test_every_attempt_builds_the_same_octets() -> None:
    first = build_message(make_message(attempt=1), CONFIG).as_bytes()
    retry = build_message(make_message(attempt=2), CONFIG).as_bytes()

    assert first == retry


def test_other_deliveries_get_other_ids_and_boundaries() -> None:
    one = build_message(make_message(), CONFIG)
    other = build_message(make_message(delivery_id="dlv_other"), CONFIG)

    assert one["Message-ID"] != other["Message-ID"]
    assert one.get_boundary() != other.get_boundary()
    assert str(one.get_boundary()).startswith("=_")


def test_missing_title_and_body() -> None:
    built = parse(build_message(make_message(title=None, body=None), CONFIG).as_bytes())

    assert built["Subject"] is None
    assert parts(built)["text/plain"] == ""


def test_unsubscribe_url_substitutes_percent_encoded_ids() -> None:
    config = EmailConfig(
        from_address="n@example.com",
        unsubscribe_url="https://u.example.com/{tenant_id}/unsubscribe?d={delivery_id}",
        unsubscribe_mailto="mailto:unsubscribe@example.com?subject=unsubscribe%20{delivery_id}",
    )

    built = build_message(make_message(tenant_id="acme corp/eu&x"), config)

    assert built["List-Unsubscribe"] == (
        f"<https://u.example.com/acme%20corp%2Feu%26x/unsubscribe?d={DELIVERY_ID}>, "
        f"<mailto:unsubscribe@example.com?subject=unsubscribe%20{DELIVERY_ID}>"
    )


def test_unsubscribe_url_carries_the_token_of_each_message() -> None:
    seen: list[Any] = []

    def token(message: Any) -> str:
        seen.append(message)
        return f"tok.{message['recipient']['user_id']}/{message['category']}"

    config = EmailConfig(from_address="n@example.com",
                         unsubscribe_url="https://u.example.com/unsubscribe?token={token}",
                         unsubscribe_token=token)
    message = make_message()

    built = build_message(message, config)

    user, category = message["recipient"]["user_id"], message["category"]
    assert built["List-Unsubscribe"] == (
        f"<https://u.example.com/unsubscribe?token=tok.{user}%2F{category}>")
    assert seen == [message]


def test_no_token_means_no_list_unsubscribe() -> None:
    config = EmailConfig(from_address="n@example.com",
                         unsubscribe_url="https://u.example.com/unsubscribe?token={token}",
                         unsubscribe_token=lambda message: None)

    built = build_message(make_message(), config)

    assert built["List-Unsubscribe"] is None and built["List-Unsubscribe-Post"] is None


def test_a_token_placeholder_needs_a_signer() -> None:
    with pytest.raises(ValueError, match="signer"):
        EmailConfig(from_address="n@example.com",
                    unsubscribe_url="https://u.example.com/unsubscribe?token={token}")


def test_a_long_unsubscribe_url_stays_one_unencoded_line() -> None:
    long_url = "https://unsubscribe.example.com/" + "p" * 200 + "?d={delivery_id}"
    config = EmailConfig(from_address="n@example.com", unsubscribe_url=long_url)

    content = build_message(make_message(), config).as_bytes()

    expected = long_url.replace("{delivery_id}", DELIVERY_ID)
    assert f"List-Unsubscribe: <{expected}>\r\n".encode() in content
    assert b"=?utf-8?" not in content


def test_message_id_uses_the_domain_of_from() -> None:
    config = EmailConfig(from_address='"Acme, Inc." <alerts@Notify.Acme.io>')

    built = build_message(make_message(), config)

    assert built["Message-ID"] == f"<{DELIVERY_ID}@Notify.Acme.io>"
    assert built["From"].addresses[0].display_name == "Acme, Inc."


def test_internationalised_domains_become_punycode() -> None:
    config = EmailConfig(from_address="Tidings <no-reply@exämple.com>")

    envelope = build_envelope(make_message(recipient=recipient("bob@bücher.de")), config)

    assert envelope.sender == "no-reply@xn--exmple-cua.com"
    assert envelope.recipient == "bob@xn--bcher-kva.de"
    assert f"<{DELIVERY_ID}@xn--exmple-cua.com>".encode() in envelope.content


def test_envelope() -> None:
    envelope = build_envelope(make_message(), CONFIG)

    assert envelope.sender == "no-reply@example.com"
    assert envelope.recipient == "bob@example.com"
    assert envelope.content == build_message(make_message(), CONFIG).as_bytes()


def test_envelope_just_under_the_size_limit() -> None:
    # Quoted-printable writes "x" as itself plus a soft break every 75 characters.
    envelope = build_envelope(make_message(body="x" * 4_000_000), CONFIG)

    assert len(envelope.content) < MAX_MESSAGE_BYTES


def test_envelope_over_the_size_limit() -> None:
    with pytest.raises(InvalidMessage, match=f"the limit is {MAX_MESSAGE_BYTES}"):
        build_envelope(make_message(body="x" * 6_000_000), CONFIG)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        # Header injection: a line break in a value taken from the message.
        ({"title": "Hi\r\nBcc: everyone@example.com"}, "header injection"),
        ({"title": "Hi\nBcc: everyone@example.com"}, "header injection"),
        ({"title": "Hi\rthere"}, "header injection"),
        ({"title": "Hi\x00there"}, "header injection"),
        ({"title": "Hi\u2028there"}, "header injection"),
        ({"recipient": recipient("bob@example.com\r\nBcc: x@example.com")}, "line break"),
        ({"recipient": recipient("bob@example.com\n")}, "line break"),
        # Addresses.
        ({"recipient": recipient(None)}, "no email address"),
        ({"recipient": recipient("")}, "no email address"),
        ({"recipient": {"user_id": "u-42"}}, "no email address"),
        ({"recipient": None}, "no email address"),
        ({"recipient": recipient(42)}, "not a string"),
        ({"recipient": recipient("bob")}, "not a valid email address"),
        ({"recipient": recipient("bob@")}, "not a valid email address"),
        ({"recipient": recipient("@example.com")}, "not a valid email address"),
        ({"recipient": recipient("bob@@example.com")}, "not a valid email address"),
        ({"recipient": recipient("bob smith@example.com")}, "not a valid email address"),
        ({"recipient": recipient("bob.@example.com")}, "not a valid email address"),
        ({"recipient": recipient("Bob <bob@example.com>")}, "not a valid email address"),
        ({"recipient": recipient("a@example.com, b@example.com")}, "not a valid email address"),
        ({"recipient": recipient("bob@example..com")}, "not a valid email address"),
        ({"recipient": recipient("bob@-example.com")}, "not a valid host name"),
        ({"recipient": recipient("bob@exa_mple.com")}, "not a valid host name"),
        ({"recipient": recipient("bob@[300.1.1.1]")}, "invalid address literal"),
        ({"recipient": recipient("bøb@example.com")}, "needs SMTPUTF8"),
        ({"recipient": recipient("b" * 65 + "@example.com")}, "longer than 64"),
        ({"recipient": recipient("b@" + ("d" * 63 + ".") * 4 + "com")}, "longer than 254"),
        # Fields the message needs.
        ({"delivery_id": ""}, "Message-ID"),
        ({"delivery_id": None}, "Message-ID"),
        ({"delivery_id": "dlv 1"}, "Message-ID"),
        ({"delivery_id": "dlv>1"}, "Message-ID"),
        ({"delivery_id": "dlv\r\n1"}, "Message-ID"),
        ({"title": 7}, "title is not a string"),
        ({"body": ["x"]}, "body is not a string"),
        ({"created_at": None}, "created_at"),
        ({"created_at": "1699999999123"}, "created_at"),
        ({"created_at": 10**20}, "out of range"),
        ({"tenant_id": None}, "tenant_id"),
    ],
)
def test_invalid_message(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        build_envelope(make_message(**overrides), CONFIG)


@pytest.mark.parametrize(
    "address",
    [
        "bob@example.com",
        "Bob.Smith+tag@mail.example.co.uk",
        '"bob smith"@example.com',
        "bob@localhost",
        "bob@[192.0.2.1]",
        "bob@[IPv6:2001:db8::1]",
        "o'neil@example.ie",
    ],
)
def test_valid_recipients(address: str) -> None:
    assert build_envelope(make_message(recipient=recipient(address)), CONFIG).recipient == address


# -- EmailConfig --------------------------------------------------------------------------


def test_config_defaults() -> None:
    assert CONFIG.tls_mode == "starttls"
    assert CONFIG.effective_port == 587
    assert EmailConfig(from_address="n@example.com", tls_mode="implicit").effective_port == 465
    assert EmailConfig(from_address="n@example.com", tls_mode="none").effective_port == 25
    assert EmailConfig(from_address="n@example.com", port=2525).effective_port == 2525


def test_password_is_not_in_repr() -> None:
    config = EmailConfig(from_address="n@example.com", username="u", password="s3cret")

    assert "s3cret" not in repr(config)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"from_address": "not an address"}, "from_address"),
        ({"from_address": "a@example.com, b@example.com"}, "from_address"),
        ({"from_address": "n@example.com\r\nBcc: x@example.com"}, "from_address"),
        ({"from_address": "Tidings <n@>"}, "from_address"),
        ({"tls_mode": "ssl"}, "tls_mode"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"max_connections": 0}, "max_connections"),
        ({"username": ""}, "username"),
        ({"unsubscribe_url": "ftp://example.com/u"}, "http"),
        ({"unsubscribe_url": "/v1/unsubscribe"}, "http"),
        ({"unsubscribe_url": "http://example.com/u?d={delivery_id}"}, "https"),
        ({"unsubscribe_url": "https://example.com/u d"}, "space"),
        ({"unsubscribe_url": "https://example.com/u>\r\nBcc: x"}, "space"),
        ({"unsubscribe_mailto": "unsubscribe@example.com"}, "mailto"),
        ({"unsubscribe_mailto": "mailto:u@example.com>"}, "<>"),
    ],
)
def test_invalid_config(overrides: dict[str, Any], reason: str) -> None:
    settings: dict[str, Any] = {"from_address": "n@example.com"} | overrides
    with pytest.raises(ValueError, match=reason):
        EmailConfig(**settings)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:6066/u?d={delivery_id}",
        "http://127.0.0.1/u",
        "http://[::1]:8080/u",
        "https://unsubscribe.example.com/{tenant_id}/{delivery_id}",
    ],
)
def test_valid_unsubscribe_urls(url: str) -> None:
    assert EmailConfig(from_address="n@example.com", unsubscribe_url=url).unsubscribe_url == url


# -- classify_reply -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "outcome"),
    [
        # RFC 5321 §4.2.1: 2yz completed.
        (250, "2.0.0 OK: queued as 12345", Outcome.DELIVERED),
        (250, "OK", Outcome.DELIVERED),
        (251, "2.1.5 User not local; will forward", Outcome.DELIVERED),
        # 4yz: transient.
        (421, "4.3.2 Service shutting down", Outcome.RETRY),
        (421, "mx.example.com closing connection", Outcome.RETRY),
        (450, "4.2.1 Mailbox busy", Outcome.RETRY),
        (451, "4.7.1 Greylisted, please try again later", Outcome.RETRY),
        (451, "4.3.0 Local error in processing", Outcome.RETRY),
        (452, "4.2.2 Mailbox full", Outcome.RETRY),
        (452, "4.5.3 Too many recipients", Outcome.RETRY),
        (454, "4.7.0 Temporary authentication failure", Outcome.RETRY),
        (450, "4.1.1 Recipient address rejected: unverified address", Outcome.RETRY),
        # 5yz with a bad-address enhanced status (RFC 3463 X.1.x, RFC 7505).
        (550, "5.1.1 No such user", Outcome.ADDRESS_INVALID),
        (
            550,
            "5.1.1 The email account that you tried to reach does not exist.\n"
            "5.1.1 Please try double-checking the recipient's email address",
            Outcome.ADDRESS_INVALID,
        ),
        (550, "5.1.2 Host unknown", Outcome.ADDRESS_INVALID),
        (553, "5.1.3 Bad destination mailbox address syntax", Outcome.ADDRESS_INVALID),
        (550, "5.1.6 Recipient has moved", Outcome.ADDRESS_INVALID),
        (556, "5.1.10 Recipient address has null MX", Outcome.ADDRESS_INVALID),
        (550, "5.2.1 The email account you tried to reach is disabled", Outcome.ADDRESS_INVALID),
        (511, "5.1.1 bad address", Outcome.ADDRESS_INVALID),
        # RFC 3463 X.2.2 mailbox full is a persistent transient failure.
        (552, "5.2.2 The email account that you tried to reach is over quota", Outcome.RETRY),
        # Other 5yz: permanent.
        (550, "No such user here", Outcome.REJECTED),
        (550, "5.7.1 Relaying denied", Outcome.REJECTED),
        (550, "5.7.26 Unauthenticated email is not accepted (DMARC)", Outcome.REJECTED),
        (552, "5.3.4 Message size exceeds fixed maximum message size", Outcome.REJECTED),
        (553, "5.1.7 Bad sender's mailbox address syntax", Outcome.REJECTED),
        (554, "5.7.1 Message rejected as spam", Outcome.REJECTED),
        (535, "5.7.8 Authentication credentials invalid", Outcome.REJECTED),
        (530, "5.7.0 Authentication required", Outcome.REJECTED),
        (500, "5.5.2 Syntax error", Outcome.REJECTED),
        # An enhanced code whose class disagrees with the reply code is ignored.
        (550, "4.1.1 mismatched", Outcome.REJECTED),
        # "5.1.10" is not "5.1.1", and "5.1.1x" is no enhanced code at all.
        (550, "5.1.1x no such thing", Outcome.REJECTED),
        # Not a final reply: a broken session.
        (354, "End data with <CR><LF>.<CR><LF>", Outcome.RETRY),
        (-1, "Malformed SMTP response line: HTTP/1.1 400", Outcome.RETRY),
        (600, "nonsense", Outcome.RETRY),
    ],
)
def test_classify_reply(code: int, text: str, outcome: Outcome) -> None:
    verdict = classify_reply(code, text)

    assert verdict.outcome is outcome
    assert verdict.status_code == code
    assert verdict.retry_after is None
    if outcome is not Outcome.DELIVERED:
        assert verdict.reason.startswith(f"SMTP {code} {text.splitlines()[0]}")
        assert "\n" not in verdict.reason


def test_classify_reply_bounds_the_reason() -> None:
    assert len(classify_reply(550, "x" * 10_000).reason) < 400


# -- classify_error -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            aiosmtplib.SMTPRecipientRefused(550, "5.1.1 No such user", "bob@example.com"),
            (Outcome.ADDRESS_INVALID, 550),
        ),
        (
            aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(451, "4.7.1 Try later", "bob@example.com")]
            ),
            (Outcome.RETRY, 451),
        ),
        (aiosmtplib.SMTPRecipientsRefused([]), (Outcome.RETRY, None)),
        (
            aiosmtplib.SMTPSenderRefused(553, "5.1.7 Bad sender", "n@example.com"),
            (Outcome.REJECTED, 553),
        ),
        # An address status for the sender says nothing about the recipient.
        (
            aiosmtplib.SMTPSenderRefused(550, "5.1.1 Sender unknown", "n@example.com"),
            (Outcome.REJECTED, 550),
        ),
        (
            aiosmtplib.SMTPSenderRefused(451, "4.3.0 Try later", "n@example.com"),
            (Outcome.RETRY, 451),
        ),
        (aiosmtplib.SMTPDataError(554, "5.7.1 Spam"), (Outcome.REJECTED, 554)),
        (aiosmtplib.SMTPDataError(451, "4.3.0 Queue full"), (Outcome.RETRY, 451)),
        (
            aiosmtplib.SMTPAuthenticationError(535, "5.7.8 Authentication credentials invalid"),
            (Outcome.REJECTED, 535),
        ),
        (aiosmtplib.SMTPAuthenticationError(454, "4.7.0 Try later"), (Outcome.RETRY, 454)),
        (aiosmtplib.SMTPConnectResponseError(421, "Too many connections"), (Outcome.RETRY, 421)),
        (aiosmtplib.SMTPConnectResponseError(554, "No SMTP service here"), (Outcome.REJECTED, 554)),
        (aiosmtplib.SMTPHeloError(501, "Syntax error"), (Outcome.REJECTED, 501)),
        (aiosmtplib.SMTPResponseException(-1, "Malformed SMTP response line"), (Outcome.RETRY, -1)),
        # No reply at all: retried.
        (aiosmtplib.SMTPServerDisconnected("Connection lost"), (Outcome.RETRY, None)),
        (aiosmtplib.SMTPConnectError("Error connecting: refused"), (Outcome.RETRY, None)),
        (aiosmtplib.SMTPConnectTimeoutError("Timed out connecting"), (Outcome.RETRY, None)),
        (aiosmtplib.SMTPReadTimeoutError("Timed out waiting"), (Outcome.RETRY, None)),
        (aiosmtplib.SMTPException("STARTTLS extension not supported"), (Outcome.RETRY, None)),
        (aiosmtplib.SMTPNotSupported("SMTPUTF8 not supported"), (Outcome.RETRY, None)),
        (ssl.SSLCertVerificationError("certificate verify failed"), (Outcome.RETRY, None)),
        (ConnectionResetError("reset"), (Outcome.RETRY, None)),
        (TimeoutError(), (Outcome.RETRY, None)),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_classify_error(error: BaseException, expected: tuple[Outcome, int | None]) -> None:
    verdict = classify_error(error)

    assert (verdict.outcome, verdict.status_code) == expected
    assert verdict.reason


def test_classify_error_names_the_exception_without_a_reply() -> None:
    verdict = classify_error(aiosmtplib.SMTPServerDisconnected("Connection lost"))

    assert verdict == Verdict.retry("SMTPServerDisconnected: Connection lost")


def test_classify_error_refuses_other_exceptions() -> None:
    with pytest.raises(TypeError, match="not an SMTP failure"):
        classify_error(KeyError("x"))


# -- rendered templates (ChannelMessage v3) -------------------------------------------------


def test_a_rendered_html_part_is_sent_as_the_html_alternative() -> None:
    html = '<!DOCTYPE html>\n<html lang="ar" dir="rtl"><body><p>مرحبًا</p></body></html>\n'
    built = parse(build_message(make_message(html=html, locale="ar"), CONFIG).as_bytes())

    assert parts(built)["text/html"] == html
    assert parts(built)["text/plain"] == "Hello Bob,\n\nInvoice #7 was paid.\nThank you!"
    assert built["Content-Language"] == "ar"


def test_a_locale_that_is_not_a_tag_is_not_a_header() -> None:
    built = build_message(make_message(locale="en\r\nBcc: all@example.com"), CONFIG)

    assert built["Content-Language"] is None
    assert "Bcc" not in built.as_string()


def test_html_that_is_not_text_is_an_invalid_message() -> None:
    with pytest.raises(InvalidMessage, match="html"):
        build_message(make_message(html=b"<p>bytes</p>"), CONFIG)
