"""Twilio's Messages API, played locally: a real HTTP server for runs and tests.

It speaks ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` the way Twilio
does: HTTP basic auth with the Account SID and Auth Token, form-encoded
parameters, the checks Twilio makes before it queues a message (each answered with
Twilio's error JSON and code), and a 201 with a Message resource when it accepts
one. It records what it accepted, can be told to fail the way Twilio does, and
posts signed status callbacks (``sent``, then ``delivered``) when asked for them::

    async with TwilioEmulator(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        twilio.fail_next("+14155552671", [(429, 20429), (500, None)])
        ...  # point the SMS connector's base_url at twilio.url
        [sms] = await twilio.wait_for(1, timeout=5)

Run it on its own (prints one line per accepted message, stops on Ctrl-C or SIGTERM)::

    python -m connectors.emulators.twilio --port 8091 --account-sid AC... --auth-token ...
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import datetime
import email.utils
import hashlib
import hmac
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
import orjson
import phonenumbers
from aiohttp import web

from connectors.emulators._server import HttpEmulator, serve_until_signalled, wait_until
from connectors.sms import BODY_MAX_CHARS, STATUS_CALLBACK_MAX_CHARS
from connectors.sms_encoding import segments, utf16_length

API_VERSION: Final = "2010-04-01"
_MESSAGING_SERVICE_SID: Final = re.compile(r"MG[0-9a-fA-F]{32}")  # Twilio error 21705

# Twilio's wording for the codes this emulator answers with (https://www.twilio.com/docs/api/errors).
_ERROR_MESSAGES: Final = {
    20003: "Authenticate",
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    20503: "Service Unavailable",
    21211: "The 'To' number {to} is not a valid phone number.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the "
    "'To' number: {to}.",
    21602: "Message body is required.",
    21603: "A 'From' or 'MessagingServiceSid' parameter is required to send a message.",
    21604: "A 'To' phone number is required.",
    21606: "The 'From' phone number provided ({sender}) is not a valid message-capable "
    "Twilio phone number for this destination/account.",
    21609: "Invalid 'StatusCallback'",
    21610: "Attempt to send to unsubscribed recipient",
    21611: "This 'From' number has exceeded the maximum number of queued messages",
    21614: "'To' number is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    21701: "The Messaging Service does not exist",
    21705: "The Messaging Service is invalid",
}


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A message the emulator accepted (answered 201)."""

    sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    encoding: str
    num_segments: int
    status_callback: str | None
    received_at: float


@dataclass(frozen=True, slots=True)
class Answered:
    """One request the emulator answered, whatever it answered."""

    to: str
    status: int
    code: int | None
    """Twilio error code of the answer; None for a 201 or an error without one."""


@dataclass(frozen=True, slots=True)
class Callback:
    """One status callback the emulator posted."""

    url: str
    message_sid: str
    message_status: str
    status: int | None
    """The callback endpoint's HTTP status; None when it could not be reached."""


class TwilioEmulator(HttpEmulator):
    """A local Twilio Messages API that checks, records and fails on cue.

    Checks, in order: basic auth (401, 20003); To present (400, 21604); a sender
    (21603); the Messaging Service SID's form (21705); when ``senders`` is given,
    that From (21606) or the Messaging Service (21701) belongs to the account; a
    body (21602); To in E.164 and valid (21211); body at most 1,600 UTF-16 code units
    (21617); StatusCallback a URL Twilio could call (21609). Then a recipient marked
    by :meth:`unsubscribe` gets 21610, and :meth:`fail_next` scripts are applied.
    """

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        senders: Iterable[str] | None = None,
        status_callbacks: bool = True,
        on_accepted: Callable[[SentMessage], None] | None = None,
    ) -> None:
        self.account_sid = account_sid
        self._auth_token = auth_token
        self._senders = None if senders is None else frozenset(senders)
        self._status_callbacks = status_callbacks
        self._on_accepted = on_accepted
        self.messages: list[SentMessage] = []
        """Accepted messages, in arrival order."""
        self.answered: list[Answered] = []
        """Every request to the Messages endpoint, in arrival order, with its answer."""
        self.callbacks: list[Callback] = []
        """Status callbacks posted, in the order they completed."""
        self._scripts: dict[str, collections.deque[_Failure]] = collections.defaultdict(
            collections.deque
        )
        self._unsubscribed: set[str] = set()
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle (async with, url: HttpEmulator) ----------------------------------

    def _application(self) -> web.Application:
        app = web.Application()
        app.router.add_post(
            f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json", self._create_message
        )
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port``; port 0 picks a free one (see :attr:`url`)."""
        await super().start(host, port)
        # For the status callbacks it posts.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        await super().stop()

    # -- scripting ---------------------------------------------------------------

    def fail_next(
        self,
        to_number: str,
        failures: list[tuple[int, int | None]],
        *,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next ``len(failures)`` valid requests to ``to_number`` with these
        ``(HTTP status, Twilio code)`` pairs in order, e.g. ``[(429, 20429), (500, None),
        (400, 21610)]``; a None code sends an error body without one. ``retry_after``
        adds a ``Retry-After`` header to these answers."""
        self._scripts[to_number].extend(
            _Failure(status, code, retry_after) for status, code in failures
        )

    def unsubscribe(self, to_number: str) -> None:
        """The number replied STOP: every message to it now gets 400, 21610."""
        self._unsubscribed.add(to_number)

    # -- what arrived ------------------------------------------------------------

    # The timeout is part of the assertion (ASYNC109), so the failure says how many arrived.
    async def wait_for(self, count: int, timeout: float) -> list[SentMessage]:  # noqa: ASYNC109
        """Wait until at least ``count`` messages were accepted; TimeoutError otherwise."""
        await wait_until(
            self._changed,
            lambda: len(self.messages) >= count,
            timeout,
            lambda: f"{len(self.messages)} of {count} messages",
        )
        return self.messages

    async def wait_for_callbacks(self, count: int, timeout: float) -> list[Callback]:  # noqa: ASYNC109
        """Wait until at least ``count`` status callbacks were posted."""
        await wait_until(
            self._changed,
            lambda: len(self.callbacks) >= count,
            timeout,
            lambda: f"{len(self.callbacks)} of {count} status callbacks",
        )
        return self.callbacks

    # -- the endpoint ------------------------------------------------------------

    async def _create_message(self, request: web.Request) -> web.Response:
        form = await request.post()
        params = {key: value for key, value in form.items() if isinstance(value, str)}
        to = params.get("To", "")
        if not self._authenticated(request):
            failure: _Failure | None = _Failure(401, 20003)
        elif (code := self._check(params)) is not None:
            failure = _Failure(400, code)
        elif to in self._unsubscribed:
            failure = _Failure(400, 21610)
        elif script := self._scripts.get(to):
            failure = script.popleft()
        else:
            failure = None
        if failure is None:
            response = self._accept(params)
            self.answered.append(Answered(to, response.status, None))
        else:
            response = _error(failure, to=to, sender=params.get("From", ""))
            self.answered.append(Answered(to, failure.status, failure.code))
        self._changed.set()
        return response

    def _authenticated(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # The SID in the path must be the one authenticated: one account cannot
        # create messages in another's name.
        return (
            hmac.compare_digest(user.encode(), self.account_sid.encode())
            and hmac.compare_digest(password.encode(), self._auth_token.encode())
            and request.match_info["account_sid"] == self.account_sid
        )

    def _check(self, params: dict[str, str]) -> int | None:
        """The Twilio error code the request fails validation with, or None."""
        to, sender = params.get("To", ""), params.get("From", "")
        service, body = params.get("MessagingServiceSid", ""), params.get("Body", "")
        if not to:
            return 21604
        if not sender and not service:
            return 21603
        if service and not _MESSAGING_SERVICE_SID.fullmatch(service):
            return 21705
        if self._senders is not None:
            if sender and sender not in self._senders:
                return 21606
            if service and service not in self._senders:
                return 21701
        if not body:
            return 21602
        if not _is_e164(to):
            return 21211
        if utf16_length(body) > BODY_MAX_CHARS:
            return 21617
        if (callback := params.get("StatusCallback")) and not _callable_url(callback):
            return 21609
        return None

    def _accept(self, params: dict[str, str]) -> web.Response:
        sid = "SM" + secrets.token_hex(16)
        encoding, count = segments(params["Body"])
        message = SentMessage(
            sid=sid,
            to=params["To"],
            from_=params.get("From"),
            messaging_service_sid=params.get("MessagingServiceSid"),
            body=params["Body"],
            encoding=encoding.value,
            num_segments=count,
            status_callback=params.get("StatusCallback"),
            received_at=time.time(),
        )
        self.messages.append(message)
        if self._on_accepted is not None:
            self._on_accepted(message)
        if message.status_callback and self._status_callbacks and self._session:
            task = asyncio.get_running_loop().create_task(
                self._post_status(self._session, message.status_callback, message)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response(self._resource(message), status=201)

    def _resource(self, message: SentMessage) -> dict[str, Any]:
        """The Message resource as Twilio returns it on create (Messages resource docs)."""
        now = email.utils.format_datetime(datetime.datetime.now(datetime.UTC), usegmt=False)
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{message.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": message.body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": message.from_,
            "messaging_service_sid": message.messaging_service_sid,
            "num_media": "0",
            "num_segments": str(message.num_segments),
            "price": None,
            "price_unit": "USD",
            "sid": message.sid,
            # A Messaging Service picks the sender later: the message is "accepted" first.
            "status": "queued" if message.from_ else "accepted",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": message.to,
            "uri": f"{uri}.json",
        }

    async def _post_status(
        self, session: aiohttp.ClientSession, url: str, message: SentMessage
    ) -> None:
        """Post ``sent`` then ``delivered``, signed as Twilio signs its webhooks."""
        for message_status in ("sent", "delivered"):
            params = {
                "AccountSid": self.account_sid,
                "ApiVersion": API_VERSION,
                "From": message.from_ or "",
                "MessageSid": message.sid,
                "MessageStatus": message_status,
                "SmsSid": message.sid,
                "SmsStatus": message_status,
                "To": message.to,
            }
            headers = {"X-Twilio-Signature": signature(self._auth_token, url, params)}
            try:
                async with session.post(url, data=params, headers=headers) as response:
                    status: int | None = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = None
            self.callbacks.append(Callback(url, message.sid, message_status, status))
            self._changed.set()


def signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """``X-Twilio-Signature`` of a POST to ``url``: base64 of HMAC-SHA1, keyed by the
    Auth Token, over the URL and then each parameter's name and value, sorted by name
    (https://www.twilio.com/docs/usage/security#validating-requests)."""
    payload = url + "".join(key + params[key] for key in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _is_e164(number: str) -> bool:
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(parsed) and number == phonenumbers.format_number(
        parsed, phonenumbers.PhoneNumberFormat.E164
    )


def _callable_url(url: str) -> bool:
    parts = urlsplit(url)
    return (
        len(url) <= STATUS_CALLBACK_MAX_CHARS
        and parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and "_" not in (parts.hostname or "")
    )


@dataclass(frozen=True, slots=True)
class _Failure:
    status: int
    code: int | None
    retry_after: int | None = None


def _error(failure: _Failure, *, to: str, sender: str) -> web.Response:
    """Twilio's error document: ``{"code", "message", "more_info", "status"}``."""
    document: dict[str, Any] = {"status": failure.status}
    if failure.code is None:
        document["message"] = "Internal Server Error" if failure.status >= 500 else "Error"
    else:
        template = _ERROR_MESSAGES.get(failure.code, "Error {code}")
        document |= {
            "code": failure.code,
            "message": template.format(to=to, sender=sender, code=failure.code),
            "more_info": f"https://www.twilio.com/docs/errors/{failure.code}",
        }
    response = web.Response(
        body=orjson.dumps(document), status=failure.status, content_type="application/json"
    )
    if failure.status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
    if failure.retry_after is not None:
        response.headers["Retry-After"] = str(failure.retry_after)
    return response


# -- command line ----------------------------------------------------------------


def _print_line(message: SentMessage) -> None:
    print(
        f"201 {message.sid} to={message.to} from={message.from_ or message.messaging_service_sid}"
        f" {message.encoding}x{message.num_segments} body={message.body[:60]!r}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m connectors.emulators.twilio",
        description="Local Twilio Messages API: checks, records and prints accepted SMS.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    for flag, variable in (("--account-sid", "ACCOUNT_SID"), ("--auth-token", "AUTH_TOKEN")):
        parser.add_argument(flag, default=os.environ.get(f"TIDINGS_TWILIO_{variable}"),
                            help=f"credential to accept (default: $TIDINGS_TWILIO_{variable})")
    parser.add_argument("--no-status-callbacks", action="store_true",
                        help="never post StatusCallback requests")
    args = parser.parse_args(argv)
    if not args.account_sid or not args.auth_token:
        parser.error("--account-sid and --auth-token (or their TIDINGS_TWILIO_* variables) "
                     "are required")
    emulator = TwilioEmulator(args.account_sid, args.auth_token, on_accepted=_print_line,
                              status_callbacks=not args.no_status_callbacks)
    asyncio.run(
        serve_until_signalled(
            emulator,
            lambda: emulator.start(args.host, args.port),
            lambda: f"twilio emulator listening on {emulator.url}",
            "twilio emulator stopped",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
