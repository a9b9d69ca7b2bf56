"""Email as data: the MIME message and SMTP envelope for one delivery, built without I/O.

:func:`build_message` turns a channel message into an
:class:`email.message.EmailMessage`; :func:`build_envelope` adds what the SMTP
transaction needs (MAIL FROM, RCPT TO, the DATA octets). Both raise
:class:`InvalidMessage` for a message that can never be sent (no or bad
recipient address, a line break in a header value, too large) before anything
touches the network. The SMTP side lives in :mod:`connectors.email`.

Every attempt at a delivery produces the same octets: the Message-ID is derived
from the delivery id and the Date from the notification's ``created_at``, so a
receiving system that sees a retry can recognise it as the same message.
"""

from __future__ import annotations

import datetime
import email.errors
import email.policy
import email.utils
import functools
import hashlib
import html
import ipaddress
import quopri
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from typing import Any, Final, Literal
from urllib.parse import quote, urlsplit

from connectors.verdict import InvalidMessage

__all__ = [
    "DEFAULT_PORTS",
    "MAX_MESSAGE_BYTES",
    "EmailConfig",
    "Envelope",
    "TlsMode",
    "build_envelope",
    "build_message",
]

TlsMode = Literal["none", "starttls", "implicit"]

# The standard port for each way of securing the connection: 25 for plain SMTP
# (RFC 5321 §4.5.4.2's "port 25"), 587 for submission with STARTTLS (RFC 6409
# §3.1) and 465 for submission over implicit TLS (RFC 8314 §7.3).
DEFAULT_PORTS: Final[Mapping[str, int]] = {"none": 25, "starttls": 587, "implicit": 465}

# Limits on a message differ by provider (Gmail accepts 25 MB, many ISPs and
# relays 10 MB), and each advertises its own with SIZE (RFC 1870). A rendered
# notification is a few kilobytes; this bound, the common lowest one, stops a
# runaway body here with a reason instead of at the server with a 552.
MAX_MESSAGE_BYTES: Final = 10 * 1024 * 1024

# RFC 5321 §4.5.3.1.1-3: a local part holds at most 64 octets, a domain 255,
# and a path ("<" local "@" domain ">") 256, so an address at most 254.
_MAX_LOCAL_PART: Final = 64
_MAX_ADDRESS: Final = 254

# RFC 5322 §2.1.1: a line is at most 998 characters, CRLF excluded.
_MAX_LINE: Final = 998

# RFC 1035 §2.3.1 "preferred name syntax", as relaxed by RFC 1123 §2.1 (a label
# may start with a digit).
_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

# RFC 5322 §3.6.4: the left part of a msg-id is a dot-atom-text.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")

# A header value taken from a message may not break the line it is on (CR, LF,
# and the other characters str.splitlines treats as line ends, which the email
# package folds on) or carry other control characters: that is header
# injection, e.g. a title of "Hi\r\nBcc: everyone@example.com".
_HEADER_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")

# Values in the unsubscribe URL are percent-encoded; the URL itself must not
# contain what would end the "<...>" it is written in.
_URI_UNSAFE = re.compile(r"[\x00-\x20\x7f<>\"]")


class _CachingHeaderRegistry(HeaderRegistry):
    """The stdlib registry builds a new header class on every lookup, a tenth of
    the time spent building a message; the classes depend only on the name."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


# The Subject is folded at 78 characters (RFC 5322 §2.1.1's SHOULD); the headers
# set raw below stay as written (refold_source="none"), which matters for a long
# List-Unsubscribe URL the package would otherwise mangle into encoded words.
_POLICY: Final = email.policy.SMTP.clone(
    refold_source="none", header_factory=_CachingHeaderRegistry()
)

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
# RFC 5646 language tag, as far as a header value needs: letters, digits and hyphens.
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8}){0,4}")


@dataclass(frozen=True, slots=True)
class EmailConfig:
    """Where and how to submit mail, and what every message carries."""

    from_address: str
    """The From header, e.g. ``Tidings <notifications@example.com>``; its address
    is also the envelope sender (MAIL FROM) and its domain ends each Message-ID."""
    host: str = "localhost"
    port: int | None = None
    """None picks the standard port for ``tls_mode`` (:data:`DEFAULT_PORTS`)."""
    username: str | None = None
    """AUTH (RFC 4954) with this user and :attr:`password`; None skips AUTH."""
    password: str = field(default="", repr=False)
    tls_mode: TlsMode = "starttls"
    """``starttls`` requires the server to offer STARTTLS (no silent fall back to
    plain text); ``implicit`` speaks TLS from the first byte; ``none`` is for a
    local server only."""
    validate_certs: bool = True
    ca_file: str | None = None
    """PEM file of extra trusted certificates, e.g. a local server's self-signed one."""
    timeout_s: float = 60.0
    """Bounds one whole attempt: waiting for a connection, connecting, the transaction."""
    unsubscribe_url: str = "http://127.0.0.1:6066/v1/unsubscribe?d={delivery_id}"
    """One-click unsubscribe endpoint (RFC 8058); ``{delivery_id}`` and
    ``{tenant_id}`` are replaced, percent-encoded. RFC 8058 §3.1 requires HTTPS;
    plain http is accepted only for a loopback host."""
    unsubscribe_mailto: str | None = None
    """Optional ``mailto:`` URI added to List-Unsubscribe (RFC 2369 §3.2), same placeholders."""
    unsubscribe_token: Callable[[Mapping[str, Any]], str | None] | None = field(
        default=None, repr=False)
    """Makes the ``{token}`` of a message: the signed, expiring one-click unsubscribe token
    (streams/unsubscribe.py). Required when the URL has a ``{token}`` placeholder. None for a
    message nobody may unsubscribe from (a required category): it gets no List-Unsubscribe."""
    max_connections: int = 4
    """SMTP connections kept open for concurrent sends; see ``EmailChannel``."""
    local_hostname: str | None = None
    """Name sent with EHLO; None uses this machine's FQDN."""

    def __post_init__(self) -> None:
        if self.tls_mode not in DEFAULT_PORTS:
            raise ValueError(f"tls_mode must be one of {sorted(DEFAULT_PORTS)}")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is out of range")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if self.username is not None and not self.username:
            raise ValueError("username must be None (no AUTH) or non-empty")
        try:
            _sender(self.from_address)
        except InvalidMessage as exc:
            raise ValueError(f"from_address: {exc}") from exc
        _check_unsubscribe_url(self.unsubscribe_url)
        if "{token}" in self.unsubscribe_url and self.unsubscribe_token is None:
            raise ValueError("unsubscribe_url has a {token} placeholder but no token signer "
                             "is configured (TIDINGS_UNSUBSCRIBE_SECRET)")
        if self.unsubscribe_mailto is not None and not self.unsubscribe_mailto.startswith(
            "mailto:"
        ):
            raise ValueError("unsubscribe_mailto must be a mailto: URI")
        if self.unsubscribe_mailto is not None and _URI_UNSAFE.search(self.unsubscribe_mailto):
            raise ValueError("unsubscribe_mailto contains a space, control character or <>\"")

    @property
    def effective_port(self) -> int:
        return DEFAULT_PORTS[self.tls_mode] if self.port is None else self.port


@dataclass(frozen=True, slots=True)
class Envelope:
    """One SMTP transaction: MAIL FROM, RCPT TO and the DATA octets (CRLF line ends)."""

    sender: str
    recipient: str
    content: bytes


def build_envelope(message: Mapping[str, Any], config: EmailConfig) -> Envelope:
    """The SMTP transaction for ``message``; raises :class:`InvalidMessage` if it cannot be sent."""
    built, recipient = _build(message, config)
    content = built.as_bytes()
    if len(content) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(
            f"email is {len(content)} bytes; the limit is {MAX_MESSAGE_BYTES}"
        )
    return Envelope(
        sender=_sender(config.from_address).addr_spec,
        recipient=recipient.addr_spec,
        content=content,
    )


def build_message(message: Mapping[str, Any], config: EmailConfig) -> EmailMessage:
    """The email for ``message``: multipart/alternative with a text and an HTML part.

    Raises :class:`InvalidMessage` when the message cannot be sent as it is.
    """
    return _build(message, config)[0]


def _build(message: Mapping[str, Any], config: EmailConfig) -> tuple[EmailMessage, Address]:
    delivery_id = _delivery_id(message)
    recipient = _recipient(message)
    title = message.get("title") or ""
    if not isinstance(title, str):
        raise InvalidMessage("title is not a string")
    if _HEADER_UNSAFE.search(title):
        raise InvalidMessage("title contains a line break or control character (header injection)")
    body = message.get("body") or ""
    if not isinstance(body, str):
        raise InvalidMessage("body is not a string")
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    sender = _sender(config.from_address)

    # Headers whose text we produce ourselves (validated ASCII) are set raw: the
    # email package re-parses every header it is given, which made building a
    # message four times slower. Only the Subject needs its encoding (RFC 2047).
    built = EmailMessage(policy=_POLICY)
    built.set_raw("From", _from_header(config.from_address))
    built.set_raw("To", recipient.addr_spec)
    if title:
        built["Subject"] = title
    built.set_raw("Date", _date(message))
    built.set_raw("Message-ID", f"<{delivery_id}@{sender.domain}>")
    # RFC 3834 §5: machine-generated mail says so, so vacation responders and
    # the like do not answer it.
    built.set_raw("Auto-Submitted", "auto-generated")
    _add_unsubscribe(built, message, config)
    locale = message.get("locale")
    if isinstance(locale, str) and _LANGUAGE_TAG.fullmatch(locale):
        # RFC 3282: the language of the content, from the template locale it was rendered in.
        built.set_raw("Content-Language", locale)
    built.set_raw("MIME-Version", "1.0")
    # A boundary derived from the delivery id keeps the message the same on every
    # attempt; "=_" cannot occur in quoted-printable text (RFC 2045 §6.7), so it
    # can never collide with a body line.
    boundary = "=_" + hashlib.sha256(delivery_id.encode()).hexdigest()[:32]
    built.set_raw("Content-Type", f'multipart/alternative;\r\n boundary="{boundary}"')
    # RFC 2046 §5.1.4: alternatives in increasing order of preference, plain first.
    built.attach(_text_part(body, "plain"))
    built.attach(_text_part(_rendered_html(message) or _html(title, body), "html"))
    return built, recipient


def _text_part(text: str, subtype: str) -> EmailMessage:
    # Quoted-printable (RFC 2045 §6.7) keeps every line 7-bit and under 76
    # characters, so the message passes servers without 8BITMIME unchanged.
    part = EmailMessage(policy=_POLICY)
    part.set_raw("Content-Type", f'text/{subtype}; charset="utf-8"')
    part.set_raw("Content-Transfer-Encoding", "quoted-printable")
    part.set_payload(quopri.encodestring(text.encode("utf-8")).decode("ascii"))
    return part


def _delivery_id(message: Mapping[str, Any]) -> str:
    delivery_id = message.get("delivery_id")
    if not isinstance(delivery_id, str) or not _DOT_ATOM.fullmatch(delivery_id):
        raise InvalidMessage(f"delivery_id {delivery_id!r} cannot be the left part of a Message-ID")
    return delivery_id


def _recipient(message: Mapping[str, Any]) -> Address:
    recipient = message.get("recipient")
    address = recipient.get("email") if isinstance(recipient, Mapping) else None
    if not address:
        raise InvalidMessage("recipient has no email address")
    if not isinstance(address, str):
        raise InvalidMessage("recipient email is not a string")
    return _mailbox(address)


@functools.lru_cache(maxsize=16)
def _from_header(from_address: str) -> str:
    """The From header's value as the policy folds it (display name RFC 2047-encoded)."""
    folded = str(_POLICY.header_factory("From", _sender(from_address)).fold(policy=_POLICY))
    return folded.removeprefix("From:").strip()


@functools.lru_cache(maxsize=16)
def _sender(from_address: str) -> Address:
    if _HEADER_UNSAFE.search(from_address):
        raise InvalidMessage("address contains a line break or control character")
    header = _POLICY.header_factory("From", from_address)
    if header.defects or len(header.addresses) != 1:
        raise InvalidMessage(f"{from_address!r} is not a single mailbox")
    [parsed] = header.addresses
    mailbox = _mailbox(parsed.addr_spec)
    return Address(display_name=parsed.display_name, addr_spec=mailbox.addr_spec)


def _mailbox(address: str) -> Address:
    """``address`` as a bare RFC 5321 mailbox we can put in RCPT TO, or InvalidMessage.

    No display name or list; an internationalised domain becomes its IDNA
    (punycode) form; a non-ASCII local part would need SMTPUTF8 (RFC 6531),
    which this connector does not negotiate.
    """
    if _HEADER_UNSAFE.search(address):
        raise InvalidMessage(f"address {address!r} contains a line break or control character")
    try:
        parsed = Address(addr_spec=address.strip())
    except email.errors.NonASCIILocalPartDefect as exc:
        raise InvalidMessage(
            f"address {address!r} has a non-ASCII local part (needs SMTPUTF8)"
        ) from exc
    # The parser raises ValueError (defects are ValueErrors), HeaderParseError,
    # or IndexError for a trailing "@".
    except (ValueError, IndexError, email.errors.HeaderParseError) as exc:
        raise InvalidMessage(f"{address!r} is not a valid email address") from exc
    if not parsed.username or not parsed.domain:
        raise InvalidMessage(f"{address!r} is not a valid email address")
    domain = _ascii_domain(parsed.domain, address)
    if len(parsed.username.encode()) > _MAX_LOCAL_PART:
        raise InvalidMessage(f"{address!r} has a local part longer than {_MAX_LOCAL_PART} octets")
    mailbox = Address(username=parsed.username, domain=domain)
    if len(mailbox.addr_spec) > _MAX_ADDRESS:
        raise InvalidMessage(f"{address!r} is longer than {_MAX_ADDRESS} octets")
    return mailbox


def _ascii_domain(domain: str, address: str) -> str:
    if domain.startswith("[") and domain.endswith("]"):
        # RFC 5321 §4.1.3 address literal, e.g. [192.0.2.1] or [IPv6:2001:db8::1].
        literal = domain[1:-1]
        try:
            ipaddress.ip_address(literal.removeprefix("IPv6:"))
        except ValueError as exc:
            raise InvalidMessage(f"{address!r} has an invalid address literal") from exc
        return domain
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidMessage(f"{address!r} has a domain that is not a valid host name") from exc
    labels = ascii_domain.rstrip(".").split(".")
    if not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise InvalidMessage(f"{address!r} has a domain that is not a valid host name")
    return ascii_domain


def _date(message: Mapping[str, Any]) -> str:
    created_at = message.get("created_at")
    if isinstance(created_at, bool) or not isinstance(created_at, int):
        raise InvalidMessage("message has no integer created_at")
    try:
        moment = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
            milliseconds=created_at
        )
    except OverflowError as exc:
        raise InvalidMessage(f"created_at {created_at} is out of range") from exc
    # RFC 5322 §3.3: a numeric zone; "GMT" is an obsolete form (§4.3).
    return email.utils.format_datetime(moment)


def _add_unsubscribe(built: EmailMessage, message: Mapping[str, Any], config: EmailConfig) -> None:
    """List-Unsubscribe (RFC 2369 §3.2) with one-click POST (RFC 8058 §3.1).

    Written raw: the email package would otherwise turn a URL longer than a
    folded line into RFC 2047 encoded words, which no client reads as a URL.
    """
    tenant_id = message.get("tenant_id")
    if not isinstance(tenant_id, str):
        raise InvalidMessage("message has no tenant_id")
    values = {"{delivery_id}": str(message["delivery_id"]), "{tenant_id}": tenant_id}
    if config.unsubscribe_token is not None and "{token}" in config.unsubscribe_url:
        token = config.unsubscribe_token(message)
        if token is None:
            return
        values["{token}"] = token
    uris = [_substitute(config.unsubscribe_url, values)]
    if config.unsubscribe_mailto:
        uris.append(_substitute(config.unsubscribe_mailto, values))
    # One URI per line, so only a single URI longer than a line can make one long.
    value = ",\r\n ".join(f"<{uri}>" for uri in uris)
    if any(len(line) > _MAX_LINE - len("List-Unsubscribe: ") for line in value.split("\r\n")):
        raise InvalidMessage(f"unsubscribe URI is longer than a {_MAX_LINE}-character line")
    built.set_raw("List-Unsubscribe", value)
    built.set_raw("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")


def _substitute(template: str, values: Mapping[str, str]) -> str:
    for placeholder, value in values.items():
        template = template.replace(placeholder, quote(value, safe=""))
    return template


def _check_unsubscribe_url(url: str) -> None:
    if _URI_UNSAFE.search(url):
        raise ValueError("unsubscribe_url contains a space, control character or <>\"")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("unsubscribe_url must be an http(s) URL with a host")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        # RFC 8058 §3.1: "The List-Unsubscribe header field MUST contain one HTTPS URI."
        raise ValueError("unsubscribe_url must use https (RFC 8058) unless it is on loopback")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _rendered_html(message: Mapping[str, Any]) -> str | None:
    """The HTML part a template rendered (already escaped by the sandbox's autoescape)."""
    rendered = message.get("html")
    if rendered is None:
        return None
    if not isinstance(rendered, str):
        raise InvalidMessage("html is not a string")
    return rendered.replace("\r\n", "\n").replace("\r", "\n")


def _html(title: str, body: str) -> str:
    """The body as HTML: escaped, blank-line separated paragraphs as ``<p>``,
    single line breaks as ``<br>``. A stand-in until templates render HTML."""
    paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(body) if p.strip()]
    rendered = "\n".join(
        "<p>" + html.escape(p).replace("\n", "<br>\n") + "</p>" for p in paragraphs
    )
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n</head>\n<body>\n{rendered}\n</body>\n</html>\n"
    )
