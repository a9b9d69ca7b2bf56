"""The email channel against the SMTP emulator: a real SMTP conversation on 127.0.0.1."""

import asyncio
import email.policy
import signal
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from connectors.email import EmailChannel, EmailConfig, build_envelope
from connectors.emulators.smtp_server import SmtpServer
from connectors.verdict import InvalidMessage, Outcome, Verdict

USER, PASSWORD = "tidings", "s3cret-pass"
BOB = "bob@example.com"


def make_message(delivery_id: str = "dlv_1", **overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "delivery_id": delivery_id,
        "notification_id": "ntf_1",
        "tenant_id": "acme",
        "channel": "email",
        "category": "billing",
        "priority": "normal",
        "recipient": {"user_id": "u-42", "email": BOB, "push_tokens": []},
        "title": "Invoice paid",
        "body": "Hello Bob,\n\nInvoice #7 was paid.",
        "data": {},
        "metadata": {},
        "attempt": 1,
        "created_at": 1_699_999_999_123,
    }
    message.update(overrides)
    return message


def config_for(server: SmtpServer, **overrides: Any) -> EmailConfig:
    settings: dict[str, Any] = {
        "from_address": "Tidings <no-reply@example.com>",
        "host": server.host,
        "port": server.port,
        "tls_mode": server.tls_mode,
        "ca_file": server.cert_path,
        "local_hostname": "localhost",
        "timeout_s": 5.0,
    }
    if server.requires_auth:
        settings |= {"username": USER, "password": PASSWORD}
    return EmailConfig(**(settings | overrides))


@pytest.fixture
async def server() -> AsyncIterator[SmtpServer]:
    async with SmtpServer() as server:
        yield server


@pytest.fixture
async def channel_for() -> AsyncIterator[Callable[..., EmailChannel]]:
    """Channels made by a test, closed after it."""
    channels: list[EmailChannel] = []

    def make(config: EmailConfig) -> EmailChannel:
        channels.append(EmailChannel(config))
        return channels[-1]

    yield make
    for channel in channels:
        await channel.aclose()


def text_parts(message: EmailMessage) -> dict[str, str]:
    return {
        part.get_content_type(): str(part.get_content()).replace("\r\n", "\n")
        for part in message.iter_parts()
    }


# -- delivered ----------------------------------------------------------------------------


async def test_delivered_mail_is_parsed_and_recorded(
    server: SmtpServer, channel_for: Callable[..., EmailChannel]
) -> None:
    config = config_for(server)
    channel = channel_for(config)

    verdict = await channel.send(make_message())

    assert verdict == Verdict.delivered(status_code=250)
    [mail] = await server.wait_for(1, timeout=5)
    assert mail.mail_from == "no-reply@example.com"
    assert mail.rcpt_tos == (BOB,)
    assert mail.raw == build_envelope(make_message(), config).content
    message = mail.message
    assert message.get_content_type() == "multipart/alternative"
    assert message["From"] == "Tidings <no-reply@example.com>"
    assert message["To"] == BOB
    assert message["Subject"] == "Invoice paid"
    assert message["Message-ID"] == "<dlv_1@example.com>"
    assert message["List-Unsubscribe"] == "<http://127.0.0.1:6066/v1/unsubscribe?d=dlv_1>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    parts = text_parts(message)
    assert list(parts) == ["text/plain", "text/html"]
    assert parts["text/plain"] == "Hello Bob,\n\nInvoice #7 was paid."
    assert "<p>Hello Bob,</p>\n<p>Invoice #7 was paid.</p>" in parts["text/html"]
    assert not mail.tls
    assert mail.authenticated_as is None
    assert server.by_message_id() == {"<dlv_1@example.com>": 1}


async def test_starttls_and_auth(channel_for: Callable[..., EmailChannel]) -> None:
    async with SmtpServer(username=USER, password=PASSWORD, tls_mode="starttls") as server:
        assert server.cert_path is not None and Path(server.cert_path).is_file()
        channel = channel_for(config_for(server))

        verdict = await channel.send(make_message())

        assert verdict.outcome is Outcome.DELIVERED
        [mail] = await server.wait_for(1, timeout=5)
        assert mail.tls
        assert mail.authenticated_as == USER
        cert_path = server.cert_path
    assert not Path(cert_path).exists()  # removed on stop


async def test_implicit_tls_and_auth(channel_for: Callable[..., EmailChannel]) -> None:
    async with SmtpServer(username=USER, password=PASSWORD, tls_mode="implicit") as server:
        channel = channel_for(config_for(server))

        verdict = await channel.send(make_message())

        assert verdict.outcome is Outcome.DELIVERED
        [mail] = await server.wait_for(1, timeout=5)
        assert mail.tls
        assert mail.authenticated_as == USER


async def test_plain_mode_with_auth(channel_for: Callable[..., EmailChannel]) -> None:
    async with SmtpServer(username=USER, password=PASSWORD) as server:
        verdict = await channel_for(config_for(server)).send(make_message())

        assert verdict.outcome is Outcome.DELIVERED
        assert server.received[0].authenticated_as == USER


async def test_certificate_checks_can_be_turned_off(
    channel_for: Callable[..., EmailChannel],
) -> None:
    async with SmtpServer(tls_mode="implicit") as server:
        config = config_for(server, ca_file=None, validate_certs=False)

        verdict = await channel_for(config).send(make_message())

        assert verdict.outcome is Outcome.DELIVERED


# -- failures -----------------------------------------------------------------------------


@pytest.mark.parametrize("tls_mode", ["starttls", "implicit"])
async def test_wrong_password_is_rejected_535(
    channel_for: Callable[..., EmailChannel], tls_mode: Any
) -> None:
    async with SmtpServer(username=USER, password=PASSWORD, tls_mode=tls_mode) as server:
        channel = channel_for(config_for(server, password="wrong"))

        verdict = await channel.send(make_message())

        assert (verdict.outcome, verdict.status_code) == (Outcome.REJECTED, 535)
        assert "5.7.8" in verdict.reason
        assert server.received == []


async def test_missing_credentials_are_rejected_530(
    channel_for: Callable[..., EmailChannel],
) -> None:
    async with SmtpServer(username=USER, password=PASSWORD) as server:
        channel = channel_for(config_for(server, username=None, password=""))

        verdict = await channel.send(make_message())

        assert (verdict.outcome, verdict.status_code) == (Outcome.REJECTED, 530)
        assert "5.7.0 Authentication required" in verdict.reason


async def test_greylisting_451_is_retried_then_delivered(
    server: SmtpServer, channel_for: Callable[..., EmailChannel]
) -> None:
    server.fail_next(BOB, 451, "4.7.1 Greylisted, please try again later")
    channel = channel_for(config_for(server))

    verdicts = [await channel.send(make_message()) for _ in range(2)]

    assert [(v.outcome, v.status_code) for v in verdicts] == [
        (Outcome.RETRY, 451),
        (Outcome.DELIVERED, 250),
    ]
    assert "4.7.1 Greylisted" in verdicts[0].reason
    assert server.by_message_id() == {"<dlv_1@example.com>": 1}
    assert server.sessions == 1  # RSET, not a new connection


async def test_unknown_user_550_511_is_address_invalid(
    server: SmtpServer, channel_for: Callable[..., EmailChannel]
) -> None:
    server.fail_next(BOB, 550, "5.1.1 No such user")

    verdict = await channel_for(config_for(server)).send(make_message())

    assert (verdict.outcome, verdict.status_code) == (Outcome.ADDRESS_INVALID, 550)
    assert server.received == []


async def test_content_refused_at_data_is_rejected_and_the_connection_kept(
    server: SmtpServer, channel_for: Callable[..., EmailChannel]
) -> None:
    server.fail_next("*", 554, "5.7.1 Message rejected as spam", stage="DATA")
    channel = channel_for(config_for(server))

    refused = await channel.send(make_message("dlv_spam"))
    accepted = await channel.send(make_message("dlv_ham"))

    assert (refused.outcome, refused.status_code) == (Outcome.REJECTED, 554)
    assert accepted.outcome is Outcome.DELIVERED
    assert server.by_message_id() == {"<dlv_ham@example.com>": 1}
    assert server.sessions == 1


async def test_always_fails_until_restored(
    server: SmtpServer, channel_for: Callable[..., EmailChannel]
) -> None:
    server.always(BOB, 452, "4.2.2 Mailbox full")
    channel = channel_for(config_for(server))

    failed = [await channel.send(make_message()) for _ in range(2)]
    server.always(BOB, 250)
    restored = await channel.send(make_message())

    assert [v.outcome for v in failed] == [Outcome.RETRY, Outcome.RETRY]
    assert restored.outcome is Outcome.DELIVERED


async def test_scripted_failures_only_touch_their_recipient(
    server: SmtpServer, channel_for: Callable[..., EmailChannel]
) -> None:
    server.always("alice@example.com", 550, "5.1.1 No such user")

    verdict = await channel_for(config_for(server)).send(make_message())

    assert verdict.outcome is Outcome.DELIVERED


async def test_421_closes_the_connection_and_the_next_send_reconnects(
    server: SmtpServer, channel_for: Callable[..., EmailChannel]
) -> None:
    server.fail_next(BOB, 421, "4.3.2 Service shutting down")
    channel = channel_for(config_for(server))

    verdicts = [await channel.send(make_message()) for _ in range(2)]

    assert [(v.outcome, v.status_code) for v in verdicts] == [
        (Outcome.RETRY, 421),
        (Outcome.DELIVERED, 250),
    ]
    assert server.sessions == 2


async def test_too_large_for_the_server_is_rejected_552(
    channel_for: Callable[..., EmailChannel],
) -> None:
    async with SmtpServer(max_message_bytes=2_000) as server:
        verdict = await channel_for(config_for(server)).send(make_message(body="x" * 3_000))

        assert (verdict.outcome, verdict.status_code) == (Outcome.REJECTED, 552)


async def test_header_injection_is_refused_before_connecting(
    server: SmtpServer, channel_for: Callable[..., EmailChannel]
) -> None:
    channel = channel_for(config_for(server))

    with pytest.raises(InvalidMessage, match="header injection"):
        await channel.send(make_message(title="Hi\r\nBcc: everyone@example.com"))

    assert server.sessions == 0


async def test_invalid_recipient_is_refused_before_connecting(
    server: SmtpServer, channel_for: Callable[..., EmailChannel]
) -> None:
    message = make_message(recipient={"user_id": "u-42", "email": "bob@@example.com"})

    with pytest.raises(InvalidMessage, match="not a valid email address"):
        await channel_for(config_for(server)).send(message)

    assert server.sessions == 0


@pytest.mark.parametrize("tls_mode", ["starttls", "implicit"])
async def test_untrusted_certificate_is_retried(
    channel_for: Callable[..., EmailChannel], tls_mode: Any
) -> None:
    async with SmtpServer(tls_mode=tls_mode) as server:
        verdict = await channel_for(config_for(server, ca_file=None)).send(make_message())

        assert verdict.outcome is Outcome.RETRY
        assert "CERTIFICATE_VERIFY_FAILED" in verdict.reason
        assert server.received == []


async def test_starttls_is_required_when_configured(
    server: SmtpServer, channel_for: Callable[..., EmailChannel]
) -> None:
    verdict = await channel_for(config_for(server, tls_mode="starttls")).send(make_message())

    assert verdict.outcome is Outcome.RETRY
    assert "STARTTLS" in verdict.reason
    assert server.received == []


async def test_server_refuses_mail_before_starttls(
    channel_for: Callable[..., EmailChannel],
) -> None:
    async with SmtpServer(tls_mode="starttls") as server:
        verdict = await channel_for(config_for(server, tls_mode="none")).send(make_message())

        assert (verdict.outcome, verdict.status_code) == (Outcome.REJECTED, 530)
        assert "STARTTLS" in verdict.reason


async def test_connection_refused_is_retried(channel_for: Callable[..., EmailChannel]) -> None:
    async with SmtpServer() as stopped:
        config = config_for(stopped)

    verdict = await channel_for(config).send(make_message())

    assert verdict.outcome is Outcome.RETRY
    assert verdict.reason.startswith("SMTPConnectError")


async def test_silent_server_hits_the_deadline(channel_for: Callable[..., EmailChannel]) -> None:
    connections: list[asyncio.StreamWriter] = []

    async def never_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    silent = await asyncio.start_server(never_greet, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    config = EmailConfig(
        from_address="n@example.com", host="127.0.0.1", port=port, tls_mode="none",
        local_hostname="localhost", timeout_s=0.2,
    )
    try:
        verdict = await channel_for(config).send(make_message())
    finally:
        for writer in connections:
            writer.close()
        silent.close()
        await silent.wait_closed()

    assert verdict.outcome is Outcome.RETRY
    assert "Timeout" in verdict.reason or "Timed out" in verdict.reason


# -- connections --------------------------------------------------------------------------


async def test_sends_reuse_one_connection(
    server: SmtpServer, channel_for: Callable[..., EmailChannel]
) -> None:
    channel = channel_for(config_for(server))

    verdicts = [await channel.send(make_message(f"dlv_{n}")) for n in range(3)]

    assert all(v.outcome is Outcome.DELIVERED for v in verdicts)
    assert server.sessions == 1
    assert [mail.session for mail in server.received] == [1, 1, 1]


async def test_reconnects_after_the_server_closed_an_idle_connection(
    server: SmtpServer, channel_for: Callable[..., EmailChannel]
) -> None:
    channel = channel_for(config_for(server))
    await channel.send(make_message("dlv_1"))
    server.drop_connections()
    await asyncio.sleep(0.05)  # the client sees the close

    verdict = await channel.send(make_message("dlv_2"))

    assert verdict.outcome is Outcome.DELIVERED
    assert [mail.session for mail in server.received] == [1, 2]


async def test_reconnects_when_the_close_is_noticed_only_at_mail_from(
    server: SmtpServer, channel_for: Callable[..., EmailChannel]
) -> None:
    channel = channel_for(config_for(server))
    await channel.send(make_message("dlv_1"))
    server.drop_connections()  # no pause: the client still thinks it is connected

    verdict = await channel.send(make_message("dlv_2"))

    assert verdict.outcome is Outcome.DELIVERED
    assert [mail.session for mail in server.received] == [1, 2]


async def test_concurrent_sends_share_at_most_max_connections(
    server: SmtpServer, channel_for: Callable[..., EmailChannel]
) -> None:
    channel = channel_for(config_for(server, max_connections=3))

    verdicts = await asyncio.gather(*(channel.send(make_message(f"dlv_{n}")) for n in range(20)))

    assert all(v.outcome is Outcome.DELIVERED for v in verdicts)
    assert 1 < server.sessions <= 3
    assert len(server.by_message_id()) == 20


async def test_aclose_quits_and_refuses_further_sends(server: SmtpServer) -> None:
    channel = EmailChannel(config_for(server))
    await channel.send(make_message())

    await channel.aclose()

    with pytest.raises(RuntimeError, match="closed"):
        await channel.send(make_message())


# -- the emulator's own checks ------------------------------------------------------------


async def raw_client(server: SmtpServer) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(
        hostname=server.host, port=server.port, start_tls=False, local_hostname="localhost"
    )
    await client.connect()
    await client.ehlo()
    return client


def raw_message(**headers: str) -> bytes:
    message = EmailMessage(policy=email.policy.SMTP)
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("hello")
    return message.as_bytes()


@pytest.mark.parametrize(
    ("headers", "reply"),
    [
        ({"From": "n@example.com", "Date": "Tue, 14 Nov 2023 22:13:19 +0000"}, "Message-ID"),
        ({"From": "n@example.com", "Message_ID": "<1@example.com>"}, "0 Date headers"),
        ({"Date": "Tue, 14 Nov 2023 22:13:19 +0000", "Message_ID": "<1@example.com>"},
         "0 From headers"),
        ({"From": "n@example.com", "Date": "Tue, 14 Nov 2023 22:13:19 +0000",
          "Message_ID": "no-angle-brackets"}, "Message-ID"),
    ],
)
async def test_messages_missing_required_headers_are_refused(
    server: SmtpServer, headers: dict[str, str], reply: str
) -> None:
    client = await raw_client(server)
    try:
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await client.sendmail("n@example.com", [BOB], raw_message(**headers))
    finally:
        client.close()

    assert refused.value.code == 550
    assert refused.value.message.startswith("5.7.1")
    assert reply in refused.value.message
    assert server.received == []


async def test_duplicate_headers_are_refused(server: SmtpServer) -> None:
    content = raw_message(
        From="n@example.com", Date="Tue, 14 Nov 2023 22:13:19 +0000", Message_ID="<1@example.com>"
    ).replace(b"From:", b"Subject: one\r\nSubject: two\r\nFrom:", 1)
    client = await raw_client(server)
    try:
        with pytest.raises(aiosmtplib.SMTPDataError, match="several Subject headers"):
            await client.sendmail("n@example.com", [BOB], content)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("command", "expected"),
    [("mail", "553 5.1.7"), ("rcpt", "553 5.1.3")],
)
async def test_malformed_addresses_are_refused(
    server: SmtpServer, command: str, expected: str
) -> None:
    client = await raw_client(server)
    try:
        if command == "mail":
            response = await client.execute_command(b"MAIL", b"FROM:<bob.@example.com>")
        else:
            await client.mail("n@example.com")
            response = await client.execute_command(b"RCPT", b"TO:<bob.@example.com>")
    finally:
        client.close()

    assert f"{response.code} {response.message}".startswith(expected)


def test_scripted_failures_must_be_failures() -> None:
    server = SmtpServer()
    with pytest.raises(ValueError, match="4yz or 5yz"):
        server.fail_next(BOB, 250, "OK")
    with pytest.raises(ValueError, match="stage"):
        server.fail_next(BOB, 550, "5.1.1 x", stage="MAIL")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one line"):
        server.always(BOB, 550, "5.1.1 x\r\n250 OK")


def test_credentials_come_in_pairs() -> None:
    with pytest.raises(ValueError, match="both"):
        SmtpServer(username=USER)


async def test_wait_for_times_out_saying_how_many_arrived(server: SmtpServer) -> None:
    with pytest.raises(TimeoutError, match="0 of 1"):
        await server.wait_for(1, timeout=0.05)


async def test_address_needs_a_started_server() -> None:
    server = SmtpServer()
    with pytest.raises(RuntimeError):
        _ = server.port
    await server.start()
    await server.stop()
    with pytest.raises(RuntimeError):
        _ = server.host


# -- command line -------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_command_line_prints_accepted_mail_and_stops_cleanly(
    signum: signal.Signals,
    run_emulator: Callable[..., Any],
    channel_for: Callable[..., EmailChannel],
) -> None:
    async with run_emulator(
        "smtp_server", "--tls", "starttls", "--username", USER, "--password", PASSWORD
    ) as cli:
        fields = dict(f.split("=", 1) for f in cli.banner.split() if "=" in f)
        address = cli.banner.split(" on ", 1)[1].split()[0]
        host, port = address.rsplit(":", 1)
        assert fields["tls"] == "starttls" and fields["auth"] == "on", cli.banner
        config = EmailConfig(
            from_address="Tidings <no-reply@example.com>", host=host, port=int(port),
            username=USER, password=PASSWORD, ca_file=fields["ca_file"],
            local_hostname="localhost", timeout_s=5.0,
        )

        verdict = await channel_for(config).send(make_message("dlv_cli"))
        line = await cli.readline()

        await cli.stop(signum)

    assert verdict.outcome is Outcome.DELIVERED
    assert line.startswith("250 ")
    assert "message-id=<dlv_cli@example.com>" in line
    assert "'Invoice paid'" in line
    assert not Path(fields["ca_file"]).exists()
