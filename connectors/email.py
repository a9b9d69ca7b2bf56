"""Email connector: SMTP submission (RFC 5321, RFC 6409) over aiosmtplib.

Pure core: :func:`connectors.email_message.build_message` turns a channel
message into MIME, and :func:`classify_reply` turns an SMTP reply into a
:class:`Verdict`. :class:`EmailChannel` is the I/O edge: it keeps SMTP
connections open across sends and maps aiosmtplib's exceptions to verdicts
with :func:`classify_error`.

Connections: a small pool, not one connection behind a lock. SMTP carries one
transaction at a time on a connection (RFC 5321 §3.3: MAIL, RCPT, DATA, then the
final reply) and aiosmtplib does not pipeline (RFC 2920), so one connection caps
a channel at one message per four round trips however many sends are waiting.
``max_connections`` connections let concurrent sends overlap; they open only
when sends overlap (the most recently used connection is reused first), and the
cap stays small because submission servers limit connections per client.

A connection the server closed while it sat idle (idle timeout, restart) is
replaced transparently: if MAIL FROM on a reused connection finds it gone or
answers 421, nothing has been accepted yet, so the transaction runs once more
on a fresh connection within the same attempt.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Mapping
from typing import Any, Final

import aiosmtplib
import httpx

from connectors.email_message import EmailConfig, Envelope, build_envelope, build_message
from connectors.verdict import InvalidMessage, Outcome, Verdict

__all__ = [
    "EmailChannel",
    "EmailConfig",
    "build_envelope",
    "build_message",
    "classify_error",
    "classify_reply",
]

_REASON_CHARS: Final = 300

# RFC 3463 §2: class "." subject "." detail, subject and detail of 1-3 digits;
# RFC 2034 puts it at the start of the reply text.
_ENHANCED_STATUS = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\S)")

# (lowest code, highest code, enhanced status or None for any, outcome, why).
# The first matching row wins, so enhanced codes come before the reply classes.
_REPLY_RULES: Final[tuple[tuple[int, int, str | None, Outcome, str], ...]] = (
    # RFC 3463 §3.2 X.1.1 "Bad destination mailbox address": no such mailbox.
    (500, 599, "5.1.1", Outcome.ADDRESS_INVALID, "bad destination mailbox address"),
    # RFC 3463 §3.2 X.1.2 "Bad destination system address": no such domain/host.
    (500, 599, "5.1.2", Outcome.ADDRESS_INVALID, "bad destination system address"),
    # RFC 3463 §3.2 X.1.3 "Bad destination mailbox address syntax".
    (500, 599, "5.1.3", Outcome.ADDRESS_INVALID, "bad destination mailbox address syntax"),
    # RFC 3463 §3.2 X.1.6 "Destination mailbox has moved, No forwarding address".
    (500, 599, "5.1.6", Outcome.ADDRESS_INVALID, "mailbox has moved, no forwarding address"),
    # RFC 7505 §4, §6: the domain publishes a null MX, it accepts no mail at all
    # ("5.1.10 Recipient address has null MX").
    (500, 599, "5.1.10", Outcome.ADDRESS_INVALID, "recipient domain has null MX"),
    # RFC 3463 §3.3 X.2.1 "Mailbox disabled, not accepting messages"; permanent
    # when sent with class 5 (e.g. Gmail's "550 5.2.1 ... account ... is disabled").
    (500, 599, "5.2.1", Outcome.ADDRESS_INVALID, "mailbox disabled"),
    # RFC 3463 §3.3 X.2.2 "Mailbox full": "should be used as a persistent
    # transient failure", even when the server sends it as 552.
    (500, 599, "5.2.2", Outcome.RETRY, "mailbox full"),
    # RFC 5321 §3.8, §4.2.3: 421 "Service not available, closing transmission
    # channel", e.g. a server shutting down or over its connection limit.
    (421, 421, None, Outcome.RETRY, "service not available"),
    # RFC 4954 §6: 535 5.7.8 "Authentication credentials invalid"; every message
    # fails the same way until the credentials are fixed.
    (535, 535, None, Outcome.REJECTED, "authentication credentials invalid"),
    # RFC 5321 §4.2.1: 2yz "Positive Completion reply".
    (200, 299, None, Outcome.DELIVERED, ""),
    # RFC 5321 §4.2.1: 4yz "Transient Negative Completion reply", e.g. 450, 451
    # (greylisting "451 4.7.1"), 452, 454 4.7.0 (RFC 4954 temporary auth failure).
    (400, 499, None, Outcome.RETRY, "transient failure"),
    # RFC 5321 §4.2.1: 5yz "Permanent Negative Completion reply", e.g. 550 with
    # no enhanced code, 552 5.3.4 too large, 554 5.7.1 refused as spam.
    (500, 599, None, Outcome.REJECTED, "permanent failure"),
)


def classify_reply(code: int, message: str) -> Verdict:
    """Verdict for the SMTP reply ``code`` with its text (without the code).

    A reply outside 2yz/4yz/5yz (aiosmtplib reports an unparseable line as -1,
    a 3yz where a final reply belongs) is a broken session: retried.
    """
    enhanced = _enhanced_status(code, message)
    outcome, why = next(
        (
            (outcome, why)
            for low, high, status, outcome, why in _REPLY_RULES
            if low <= code <= high and status in (None, enhanced)
        ),
        (Outcome.RETRY, "unexpected SMTP reply"),
    )
    if outcome is Outcome.DELIVERED:
        return Verdict.delivered(status_code=code)
    text = " ".join(message.split())
    reason = f"SMTP {code} {text}"[:_REASON_CHARS] + f" ({why})"
    if outcome is Outcome.ADDRESS_INVALID:
        return Verdict.address_invalid(reason, status_code=code)
    if outcome is Outcome.RETRY:
        return Verdict.retry(reason, status_code=code)
    return Verdict.rejected(reason, status_code=code)


def _enhanced_status(code: int, message: str) -> str | None:
    match = _ENHANCED_STATUS.match(message)
    # An enhanced code whose class disagrees with the reply code is ignored.
    if match is None or match[1] != str(code)[:1]:
        return None
    return f"{match[1]}.{int(match[2])}.{int(match[3])}"


def classify_error(exc: BaseException) -> Verdict:
    """Verdict for an exception aiosmtplib (or the socket under it) raised.

    A server reply is classified by :func:`classify_reply`; no reply at all (a
    refused or dropped connection, TLS failure, timeout) is retried. A drop
    after the message was sent may mean the server took it anyway (RFC 1047);
    the retry carries the same Message-ID, so receivers can tell.
    """
    name = type(exc).__name__
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        if not exc.recipients:
            return Verdict.retry(f"{name}: no recipient reply")
        return classify_error(exc.recipients[0])
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        verdict = classify_reply(exc.code, exc.message)
        if verdict.outcome is Outcome.ADDRESS_INVALID:
            # An address status in reply to MAIL FROM is about our sender, not
            # the recipient; the recipient may be fine.
            return Verdict.rejected(f"sender refused: {verdict.reason}", status_code=exc.code)
        return verdict
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return classify_reply(exc.code, exc.message)
    if isinstance(exc, aiosmtplib.SMTPException | OSError):
        # SMTPServerDisconnected, SMTPConnectError, SMTPTimeoutError, "STARTTLS
        # not supported" (a plain-text fallback is not an option), ssl.SSLError...
        detail = str(exc)
        return Verdict.retry(f"{name}: {detail}"[:_REASON_CHARS] if detail else name)
    raise TypeError(f"not an SMTP failure: {name}") from exc


class _StaleConnection(Exception):
    """MAIL FROM found the connection closed by the server; nothing was sent."""

    def __init__(self, error: aiosmtplib.SMTPException) -> None:
        super().__init__(str(error))
        self.error = error


class EmailChannel:
    """Sends each message as one SMTP transaction over a small pool of connections."""

    def __init__(self, config: EmailConfig, client: httpx.AsyncClient | None = None) -> None:
        # ``client`` is unused (SMTP is not HTTP); it keeps every channel's
        # constructor the same for the deliver agent.
        self.config = config
        self._tls_context = _tls_context(config)
        self._clients = [self._new_client() for _ in range(config.max_connections)]
        # LIFO: the warmest connection is reused, the others stay closed until
        # sends overlap.
        self._idle: asyncio.LifoQueue[aiosmtplib.SMTP] = asyncio.LifoQueue()
        for smtp in reversed(self._clients):
            self._idle.put_nowait(smtp)
        self._closed = False

    async def send(self, message: Mapping[str, Any]) -> Verdict:
        """One attempt at ``message``.

        Raises :class:`InvalidMessage`, before connecting, when the message can
        never be sent; every server answer and network failure is a Verdict.
        """
        if self._closed:
            raise RuntimeError("EmailChannel is closed")
        envelope = build_envelope(message, self.config)
        smtp: aiosmtplib.SMTP | None = None
        try:
            async with asyncio.timeout(self.config.timeout_s):
                smtp = await self._idle.get()
                return await self._attempt(smtp, envelope)
        except TimeoutError:
            # Our own deadline; aiosmtplib's timeouts are verdicts inside _attempt.
            if smtp is not None:
                smtp.close()  # a reply may still arrive and would be mis-paired
            return Verdict.retry("TimeoutError: attempt exceeded its deadline")
        except BaseException:
            if smtp is not None:
                smtp.close()
            raise
        finally:
            if smtp is not None:
                self._idle.put_nowait(smtp)

    async def aclose(self) -> None:
        """Say QUIT on every open connection (RFC 5321 §4.1.1.10) and close it."""
        self._closed = True
        for smtp in self._clients:
            if smtp.is_connected:
                try:
                    await smtp.quit(timeout=min(self.config.timeout_s, 5.0))
                except (aiosmtplib.SMTPException, OSError):
                    pass  # closing anyway; the server will notice
            smtp.close()

    async def _attempt(self, smtp: aiosmtplib.SMTP, envelope: Envelope) -> Verdict:
        try:
            if smtp.is_connected:
                try:
                    await _transact(smtp, envelope)
                except _StaleConnection:
                    smtp.close()
                    await self._connect(smtp)
                    await _transact(smtp, envelope)
            else:
                await self._connect(smtp)
                await _transact(smtp, envelope)
        except _StaleConnection as stale:
            return classify_error(stale.error)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return classify_error(exc)
        return Verdict.delivered(status_code=250)

    async def _connect(self, smtp: aiosmtplib.SMTP) -> None:
        # connect() also runs STARTTLS and AUTH as configured, closing on failure.
        await smtp.connect()
        if smtp.is_ehlo_or_helo_needed:
            await smtp.ehlo()  # learn SIZE before the first MAIL FROM

    def _new_client(self) -> aiosmtplib.SMTP:
        config = self.config
        return aiosmtplib.SMTP(
            hostname=config.host,
            port=config.effective_port,
            username=config.username,
            password=config.password if config.username is not None else None,
            local_hostname=config.local_hostname,
            timeout=config.timeout_s,
            use_tls=config.tls_mode == "implicit",
            start_tls=config.tls_mode == "starttls",
            tls_context=self._tls_context,
        )


async def _transact(smtp: aiosmtplib.SMTP, envelope: Envelope) -> None:
    """MAIL, RCPT, DATA; raises what aiosmtplib raises, or _StaleConnection."""
    options = []
    if smtp.supports_extension("size"):
        # RFC 1870 §3: declare the size so the server can refuse before DATA.
        options.append(f"SIZE={len(envelope.content)}")
    try:
        await smtp.mail(envelope.sender, options=options)
    except aiosmtplib.SMTPServerDisconnected as exc:
        raise _StaleConnection(exc) from exc
    except aiosmtplib.SMTPResponseException as exc:
        if exc.code == 421:  # aiosmtplib has closed the connection
            raise _StaleConnection(exc) from exc
        await _reset(smtp)
        raise
    except ValueError as exc:  # aiosmtplib's guard against command injection
        raise InvalidMessage(f"sender cannot be sent: {exc}") from exc
    try:
        await smtp.rcpt(envelope.recipient)
        await smtp.data(envelope.content)
    except aiosmtplib.SMTPResponseException:
        await _reset(smtp)
        raise
    except ValueError as exc:
        raise InvalidMessage(f"recipient cannot be sent: {exc}") from exc


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    """RSET after a refused transaction, so the connection can carry the next
    one (RFC 5321 §4.1.1.5); a connection that cannot be reset is closed."""
    if not smtp.is_connected:
        return
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()


def _tls_context(config: EmailConfig) -> ssl.SSLContext | None:
    if config.tls_mode == "none":
        return None
    context = ssl.create_default_context()
    if config.ca_file is not None:
        # In addition to the system's CAs (create_default_context(cafile=...)
        # would load this file instead of them).
        context.load_verify_locations(cafile=config.ca_file)
    if not config.validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
