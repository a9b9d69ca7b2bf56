"""A mail submission server, played locally: a real SMTP server (aiosmtpd) for runs and tests.

It checks what a submission server checks and answers with the replies real
servers use: AUTH with the given credentials (``535 5.7.8`` when wrong, ``530
5.7.0`` when missing), STARTTLS before anything else in ``starttls`` mode,
well-formed sender and recipient addresses (``553 5.1.7``/``553 5.1.3``), the
SIZE limit (RFC 1870, ``552``), lines of at most 998 characters, and a DATA
that parses as a message with exactly one From, Date and Message-ID (RFC 5322
§3.6; ``550 5.7.1`` otherwise, as Gmail answers). It records what it accepted
and can be told to fail the way mail servers do::

    async with SmtpServer(username="u", password="p", tls_mode="starttls") as server:
        server.fail_next("bob@example.com", 451, "4.7.1 Greylisted, try again later")
        ...  # point the email connector at server.host, server.port, server.cert_path
        [mail] = await server.wait_for(1, timeout=5)
        assert mail.message["Subject"] == "Invoice paid"

Run it on its own (prints one line per accepted message, stops on Ctrl-C or SIGTERM)::

    python -m connectors.emulators.smtp_server --port 1025 [--tls starttls] [--username U]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import email.errors
import email.policy
import hmac
import logging
import os
import re
import shutil
import ssl
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Final, Literal, cast

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from connectors.emulators._server import Emulator, serve_until_signalled, wait_until
from connectors.emulators._tls import write_certificates

TlsMode = Literal["none", "starttls", "implicit"]
Stage = Literal["RCPT", "DATA"]

# The SIZE the server advertises (RFC 1870); 10 MB is a common relay limit.
DEFAULT_MAX_MESSAGE_BYTES: Final = 10 * 1024 * 1024

_MESSAGE_ID = re.compile(r"<[^<>@\s]+@[^<>@\s]+>")
_PARSER: Final = BytesParser(policy=email.policy.default)


class _WithoutLoginDataDeprecation(logging.Filter):
    """aiosmtpd 1.4 sets its own deprecated ``Session.login_data`` on every AUTH and
    logs a warning about it each time; nothing here uses it, so drop that line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Session.login_data is deprecated")


logging.getLogger("mail.log").addFilter(_WithoutLoginDataDeprecation())


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    """One message the server accepted (answered 250 to its DATA)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    """The DATA, parsed with the email package's default policy."""
    raw: bytes
    session: int
    """Number of the connection it came on, from 1; equal numbers mean a reused connection."""
    tls: bool
    authenticated_as: str | None
    received_at: float

    @property
    def message_id(self) -> str:
        return str(self.message.get("Message-ID", ""))


@dataclass(frozen=True, slots=True)
class _Failure:
    code: int
    text: str
    stage: Stage

    @property
    def reply(self) -> str:
        return f"{self.code} {self.text}"


class SmtpServer(Emulator):
    """A local SMTP server that checks, records and fails on cue.

    Scripted failures are keyed by recipient address (``"*"`` for any) and
    answered at RCPT TO (the default, where servers refuse unknown users and
    greylist) or at the end of DATA (where they refuse content): the next one
    queued by :meth:`fail_next`, else the one set by :meth:`always`. A 421 also
    closes the connection, as RFC 5321 §3.8 says it does.
    """

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        tls_mode: TlsMode = "none",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        hostname: str = "localhost",
        idle_timeout_s: float = 300.0,
        on_received: Callable[[ReceivedMail], None] | None = None,
    ) -> None:
        if tls_mode not in ("none", "starttls", "implicit"):
            raise ValueError("tls_mode must be 'none', 'starttls' or 'implicit'")
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self._credentials = (
            None if username is None or password is None else (username.encode(), password.encode())
        )
        self.tls_mode: TlsMode = tls_mode
        self.max_message_bytes = max_message_bytes
        self.hostname = hostname
        self._idle_timeout_s = idle_timeout_s
        self._on_received = on_received
        self.received: list[ReceivedMail] = []
        self.sessions = 0
        """Connections accepted so far."""
        self._queued: dict[str, collections.deque[_Failure]] = collections.defaultdict(
            collections.deque
        )
        self._always: dict[str, _Failure] = {}
        self._arrived = asyncio.Event()
        self._protocols: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self._session_numbers: weakref.WeakKeyDictionary[SMTP, int] = weakref.WeakKeyDictionary()
        self._server: asyncio.Server | None = None
        self._tls_context: ssl.SSLContext | None = None
        self._cert_dir: Path | None = None
        self._address: tuple[str, int] | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port``; port 0 picks a free one (see :attr:`port`)."""
        if self._server is not None:
            raise RuntimeError("server already started")
        if self.tls_mode != "none":
            self._cert_dir = Path(tempfile.mkdtemp(prefix="tidings-smtp-"))
            _, cert, key = write_certificates(
                self._cert_dir, "Tidings SMTP emulator CA", host, self.hostname
            )
            self._tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls_context.load_cert_chain(cert, key)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                self._new_protocol,
                host,
                port,
                ssl=self._tls_context if self.tls_mode == "implicit" else None,
            )
        except BaseException:
            self._remove_certificate()
            raise
        bound = self._server.sockets[0].getsockname()
        self._address = (bound[0], bound[1])

    async def stop(self) -> None:
        if self._server is None:
            return
        server, self._server, self._address = self._server, None, None
        server.close()
        for protocol in list(self._protocols):
            if protocol.transport is not None:
                protocol.transport.close()
        await server.wait_closed()
        await asyncio.sleep(0)  # let connection_lost run for the closed transports
        self._remove_certificate()

    @property
    def host(self) -> str:
        return self._bound()[0]

    @property
    def port(self) -> int:
        return self._bound()[1]

    @property
    def requires_auth(self) -> bool:
        return self._credentials is not None

    @property
    def cert_path(self) -> str | None:
        """The CA certificate (PEM) a client should trust; None without TLS."""
        return None if self._cert_dir is None else str(self._cert_dir / "ca.pem")

    def _bound(self) -> tuple[str, int]:
        if self._address is None:
            raise RuntimeError("server is not started")
        return self._address

    # -- scripting ---------------------------------------------------------------

    def fail_next(self, rcpt: str, code: int, message: str, *, stage: Stage = "RCPT") -> None:
        """Answer the next transaction to ``rcpt`` (``"*"``: any) with ``code message``
        at ``stage``, e.g. ``(451, "4.7.1 Greylisted")`` or ``(550, "5.1.1 No such user")``.
        Call it again to queue more; each is used once."""
        self._queued[rcpt.lower()].append(_failure(code, message, stage))

    def always(self, rcpt: str, code: int, message: str = "", *, stage: Stage = "RCPT") -> None:
        """Answer every transaction to ``rcpt`` (``"*"``: any) this way once its
        :meth:`fail_next` queue is used up; a 2yz code restores normal service."""
        if 200 <= code <= 299:
            self._always.pop(rcpt.lower(), None)
        else:
            self._always[rcpt.lower()] = _failure(code, message, stage)

    def drop_connections(self) -> None:
        """Close every open connection the way an idle timeout does (421 4.4.2, then close)."""
        for protocol in list(self._protocols):
            transport = cast(asyncio.WriteTransport | None, protocol.transport)
            if transport is not None and not transport.is_closing():
                transport.write(f"421 4.4.2 {self.hostname} Error: timeout exceeded\r\n".encode())
                transport.close()

    def _scripted_failure(self, rcpts: list[str], stage: Stage) -> _Failure | None:
        for rcpt in (*(r.lower() for r in rcpts), "*"):
            if queue := self._queued.get(rcpt):
                if queue[0].stage == stage:
                    return queue.popleft()
                continue  # the queued failure waits for its stage
            failure = self._always.get(rcpt)
            if failure is not None and failure.stage == stage:
                return failure
        return None

    # -- what arrived ------------------------------------------------------------

    def by_message_id(self) -> collections.Counter[str]:
        """How many times each Message-ID was accepted; 1 everywhere means exactly once."""
        return collections.Counter(mail.message_id for mail in self.received)

    # The timeout is part of the assertion rather than left to the caller's
    # asyncio.timeout (ASYNC109), so the failure says how many messages arrived.
    async def wait_for(self, count: int, timeout: float) -> list[ReceivedMail]:  # noqa: ASYNC109
        """Wait until at least ``count`` messages have been accepted; return them all.

        Raises TimeoutError, saying how many arrived, after ``timeout`` seconds.
        """
        await wait_until(
            self._arrived,
            lambda: len(self.received) >= count,
            timeout,
            lambda: f"{len(self.received)} of {count} messages",
        )
        return self.received

    # -- the server --------------------------------------------------------------

    def _new_protocol(self) -> SMTP:
        starttls = self.tls_mode == "starttls"
        protocol = SMTP(
            _Handler(self),
            data_size_limit=self.max_message_bytes,
            hostname=self.hostname,
            ident="Tidings SMTP emulator",
            tls_context=self._tls_context if starttls else None,
            # RFC 3207 §4: a server may refuse everything but EHLO, STARTTLS,
            # NOOP and QUIT until TLS is up; submission servers do.
            require_starttls=starttls,
            timeout=self._idle_timeout_s,
            # With STARTTLS, AUTH is offered only once TLS is up (RFC 4954 §4);
            # in "implicit" mode the whole connection is TLS already, and
            # "none" is for local use. AUTH itself is enforced in handle_MAIL.
            auth_require_tls=starttls,
            authenticator=self._authenticate,
            loop=asyncio.get_running_loop(),
        )
        self.sessions += 1
        self._protocols.add(protocol)
        self._session_numbers[protocol] = self.sessions
        return protocol

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if (
            self._credentials is not None
            and isinstance(auth_data, LoginPassword)
            and hmac.compare_digest(auth_data.login, self._credentials[0])
            and hmac.compare_digest(auth_data.password, self._credentials[1])
        ):
            return AuthResult(success=True, auth_data=auth_data.login.decode(errors="replace"))
        # aiosmtpd answers "535 5.7.8 Authentication credentials invalid" (RFC 4954 §6).
        return AuthResult(success=False, handled=False)

    def _accept(self, server: SMTP, session: Session, envelope: Envelope, message: EmailMessage
                ) -> None:
        transport = server.transport
        mail = ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            message=message,
            raw=envelope.original_content or b"",
            session=self._session_numbers.get(server, 0),
            tls=transport is not None and transport.get_extra_info("ssl_object") is not None,
            authenticated_as=session.auth_data if session.authenticated else None,
            received_at=time.time(),
        )
        self.received.append(mail)
        self._arrived.set()
        if self._on_received is not None:
            self._on_received(mail)

    def _remove_certificate(self) -> None:
        if self._cert_dir is not None:
            shutil.rmtree(self._cert_dir, ignore_errors=True)
            self._cert_dir = None
            self._tls_context = None


class _Handler:
    """aiosmtpd hooks: each returns the reply for its command."""

    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        mail_options: list[str],
    ) -> str:
        if self._server.requires_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"  # RFC 4954 §6
        if not _is_mailbox(address):
            return "553 5.1.7 Bad sender's mailbox address syntax"  # RFC 3463 X.1.7
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        if not _is_mailbox(address):
            return "553 5.1.3 Bad destination mailbox address syntax"  # RFC 3463 X.1.3
        if failure := self._server._scripted_failure([address], "RCPT"):
            return _reply(server, failure)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = _PARSER.parsebytes(raw)
        assert isinstance(message, EmailMessage)  # the default policy's message_factory
        if problem := _rfc5322_problem(message):
            return problem
        if failure := self._server._scripted_failure(envelope.rcpt_tos, "DATA"):
            return _reply(server, failure)
        self._server._accept(server, session, envelope, message)
        return "250 2.0.0 OK: queued"


def _reply(server: SMTP, failure: _Failure) -> str:
    if failure.code == 421 and server.transport is not None:
        # The reply is written before this callback runs; close() flushes it.
        server.loop.call_soon(server.transport.close)
    return failure.reply


def _failure(code: int, message: str, stage: Stage) -> _Failure:
    if not 400 <= code <= 599:
        raise ValueError(f"a failure needs a 4yz or 5yz code, not {code}")
    if stage not in ("RCPT", "DATA"):
        raise ValueError("stage must be 'RCPT' or 'DATA'")
    if "\r" in message or "\n" in message:
        raise ValueError("the reply text must be one line")
    return _Failure(code, message, stage)


def _is_mailbox(address: str) -> bool:
    try:
        parsed = Address(addr_spec=address)
    except (ValueError, IndexError, email.errors.HeaderParseError):
        return False
    return bool(parsed.username) and bool(parsed.domain)


def _rfc5322_problem(message: EmailMessage) -> str | None:
    """The 550 reply for a message a strict receiver (Gmail) would refuse, or None."""
    # RFC 5322 §3.6: From and Date are required, and each of these at most once.
    for name in ("From", "Date", "Message-ID"):
        values = message.get_all(name) or []
        if len(values) != 1:
            if name == "Message-ID" and not values:
                return "550 5.7.1 Messages missing a valid Message-ID header are not accepted"
            return (
                f"550 5.7.1 This message is not RFC 5322 compliant: "
                f"{len(values)} {name} headers"
            )
        if getattr(values[0], "defects", ()):
            return f"550 5.7.1 This message is not RFC 5322 compliant: malformed {name} header"
    if not _MESSAGE_ID.fullmatch(str(message["Message-ID"]).strip()):
        return "550 5.7.1 Messages missing a valid Message-ID header are not accepted"
    for name in ("Subject", "To", "Cc", "Sender", "Reply-To"):
        if len(message.get_all(name) or []) > 1:
            return f"550 5.7.1 This message is not RFC 5322 compliant: several {name} headers"
    return None


# -- command line ----------------------------------------------------------------


def _print_line(mail: ReceivedMail) -> None:
    print(
        f"250 session={mail.session} from=<{mail.mail_from}> to={','.join(mail.rcpt_tos)} "
        f"message-id={mail.message_id} subject={str(mail.message.get('Subject', ''))!r}",
        flush=True,
    )


def _banner(server: SmtpServer) -> str:
    auth = "on" if server.requires_auth else "off"
    return (
        f"smtp server listening on {server.host}:{server.port} "
        f"tls={server.tls_mode} auth={auth}"
        + (f" ca_file={server.cert_path}" if server.cert_path else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m connectors.emulators.smtp_server",
        description="Local SMTP submission server: checks, records and prints accepted mail.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--tls", choices=("none", "starttls", "implicit"), default="none")
    parser.add_argument(
        "--username",
        default=os.environ.get("TIDINGS_SMTP_USERNAME"),
        help="require AUTH as this user (default: $TIDINGS_SMTP_USERNAME; unset: no AUTH)",
    )
    parser.add_argument(
        "--password",
        default=os.environ.get("TIDINGS_SMTP_PASSWORD"),
        help="the user's password (default: $TIDINGS_SMTP_PASSWORD)",
    )
    parser.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES)
    args = parser.parse_args(argv)
    if (args.username is None) != (args.password is None):
        parser.error("--username and --password go together")
    server = SmtpServer(
        username=args.username,
        password=args.password,
        tls_mode=args.tls,
        max_message_bytes=args.max_message_bytes,
        on_received=_print_line,
    )
    asyncio.run(
        serve_until_signalled(
            server,
            lambda: server.start(args.host, args.port),
            lambda: _banner(server),
            "smtp server stopped",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
