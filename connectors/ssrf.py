"""SSRF guard: never let a customer's URL make a worker call into our own network.

A webhook URL is chosen by a tenant. Without a guard, ``http://169.254.169.254/``
(cloud metadata), ``http://10.0.0.5:9092`` or a public name whose DNS answer is
``127.0.0.1`` would make the worker send requests, and quote the answers back
in delivery reasons, on the attacker's behalf. The guard resolves the host,
refuses if ANY answer is not a public address (loopback, RFC 1918, link-local,
CGNAT, unique-local, multicast, reserved, documentation, or an IPv6 form that
embeds such an IPv4 address), unless ``allowed_networks`` opens its range, and
then connects to exactly the address it checked.

Why the connect step matters (DNS rebinding): checking ``getaddrinfo`` and then
handing the *name* to httpx resolves it twice; an attacker's DNS server answers
a public address to the check and ``127.0.0.1`` to the connect. So the check
lives where the connection is made. httpx 0.28 sends every request through an
httpcore connection pool, and the pool opens sockets with
``AsyncNetworkBackend.connect_tcp(host, port, ...)``, where ``host`` is the
URL's host. :class:`GuardedBackend` implements that method as resolve → check
→ connect to the checked IP literal, in one call, so no second lookup happens.
Everything above the socket still uses the original name: the pool is keyed by
``(scheme, host, port)`` of the URL, httpx writes ``Host:`` from the URL, and
httpcore starts TLS with ``server_hostname=<URL host>``, so SNI and certificate
verification are for the name, not the IP (rewriting the URL to the IP instead
would key the pool by IP and let a TLS connection verified for one name carry
requests for another name on the same IP). httpx's ``AsyncHTTPTransport`` has
no ``network_backend`` argument, so :class:`GuardedTransport` builds the same
``httpcore.AsyncConnectionPool`` with one; that replaces the transport's
private ``_pool``, the one place this leans on httpx internals (the tests
would fail if a new httpx moved it). :class:`GuardedClient` wraps it with
``trust_env=False``: an environment proxy (``HTTPS_PROXY``) would be mounted
beside our transport and resolve names itself, out of reach of the guard.

For a client that is not guarded (any ``httpx.AsyncClient``), :func:`check_host`
gives the same refusal before the request and :func:`peer_check` is an httpcore
``trace`` extension that checks the peer of every new connection before a byte
is written, closing the rebinding gap there too (at the cost of a TCP handshake
with the refused address).

A refused address is permanent for that URL (:class:`AddressRefused`, verdict
``address_invalid``); a name that does not resolve is retried
(:class:`UnresolvedHost`): DNS failures are often temporary, and the retry
tiers dead-letter it in the end if it never resolves.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import aiohttp.abc
import httpcore
import httpx
from httpx_aiohttp import AiohttpTransport

from connectors.verdict import ConnectorError, Verdict

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolve = Callable[[str], Awaitable[Sequence[str]]]
"""Host name → its addresses as strings, like ``getaddrinfo``; injectable for tests."""

__all__ = [
    "AddressCheckFailed",
    "AddressPolicy",
    "AddressRefused",
    "DEFAULT_LIMITS",
    "GuardedBackend",
    "GuardedClient",
    "GuardedTransport",
    "UnresolvedHost",
    "address_policy",
    "check_host",
    "peer_check",
    "resolve_host",
]


class AddressCheckFailed(ConnectorError):
    """The guard did not let the connection happen; :attr:`verdict` says what to do."""

    @property
    def verdict(self) -> Verdict:
        raise NotImplementedError


class AddressRefused(AddressCheckFailed):
    """The host is, or resolves to, an address the guard refuses. Permanent."""

    @property
    def verdict(self) -> Verdict:
        return Verdict.address_invalid(str(self))


class UnresolvedHost(AddressCheckFailed):
    """The host name did not resolve; DNS may be failing for now, so retry."""

    @property
    def verdict(self) -> Verdict:
        return Verdict.retry(str(self))


# -- the policy (pure) -------------------------------------------------------------


def _in(*cidrs: str) -> Callable[[IPAddress], bool]:
    networks = tuple(ipaddress.ip_network(c) for c in cidrs)
    return lambda ip: any(ip in n for n in networks)


# (label, test). The first matching row names the refusal. Python 3.11's
# ``is_private`` misses CGNAT and multicast, and ``is_global`` calls 224.0.0.1
# global, so those rows are explicit; ``not is_global`` catches what the rest miss.
_FORBIDDEN: Final[tuple[tuple[str, Callable[[IPAddress], bool]], ...]] = (
    # 0.0.0.0 and ::; Linux connects them to the local host.
    ("unspecified", lambda ip: ip.is_unspecified),
    ("loopback", lambda ip: ip.is_loopback),  # 127.0.0.0/8, ::1
    # 169.254.0.0/16 (RFC 3927, incl. cloud metadata 169.254.169.254), fe80::/10.
    ("link-local", lambda ip: ip.is_link_local),
    # RFC 6598 shared address space; not is_private in 3.11 (only not is_global).
    ("CGNAT", _in("100.64.0.0/10")),
    ("unique-local", _in("fc00::/7")),  # RFC 4193
    ("multicast", lambda ip: ip.is_multicast),  # 224.0.0.0/4, ff00::/8
    # RFC 5737 / RFC 3849; is_private in 3.11, named here so the reason is exact.
    ("documentation", _in("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")),
    # Teredo (RFC 4380) tunnels to an IPv4 address it only obfuscates.
    ("Teredo", _in("2001::/32")),
    # 240.0.0.0/4 incl. broadcast, ::/8 (incl. deprecated IPv4-compatible ::a.b.c.d).
    ("reserved", lambda ip: ip.is_reserved),
    # RFC 1918, 0.0.0.0/8, 198.18.0.0/15 (benchmarking), IETF assignments, ...
    ("private", lambda ip: ip.is_private),
    # RFC 6890 IETF protocol assignments: only 192.0.0.0/29 is is_private in 3.11.
    ("IETF protocol assignment", _in("192.0.0.0/24")),
    ("not globally routable", lambda ip: not ip.is_global),
)

# IPv6 forms whose traffic ends at an embedded IPv4 address; that address decides.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix, v4 in the low 32 bits


def _embedded_ipv4(ip: IPAddress) -> tuple[str, ipaddress.IPv4Address] | None:
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:  # ::ffff:0:0/96; a dual-stack socket sends it over IPv4
        return "IPv4-mapped", ip.ipv4_mapped
    if ip.sixtofour is not None:  # 2002::/16 (RFC 3056)
        return "6to4", ip.sixtofour
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which addresses may be connected to: public ones, plus ``allowed`` ranges."""

    allowed: tuple[IPNetwork, ...] = ()

    def refusal(self, ip: IPAddress) -> str | None:
        """Why ``ip`` is refused (e.g. ``"private"``), or None when it may be used."""
        if any(ip in network for network in self.allowed):
            return None
        if embedded := _embedded_ipv4(ip):
            kind, v4 = embedded
            inner = self.refusal(v4)
            return None if inner is None else f"{kind} {v4}: {inner}"
        return next((label for label, test in _FORBIDDEN if test(ip)), None)


@functools.lru_cache(maxsize=32)
def address_policy(allowed_networks: tuple[str, ...] = ()) -> AddressPolicy:
    """The policy opening ``allowed_networks`` (CIDR strings, e.g. ``"127.0.0.0/8"``).

    Raises ValueError for a string that is not a network (host bits set count).
    """
    networks: list[IPNetwork] = []
    for cidr in allowed_networks:
        try:
            networks.append(ipaddress.ip_network(cidr.strip()))
        except ValueError as exc:
            raise ValueError(f"allowed network {cidr!r} is not a CIDR network: {exc}") from exc
    return AddressPolicy(tuple(networks))


# -- resolving and checking --------------------------------------------------------


async def resolve_host(host: str) -> Sequence[str]:
    """The host's TCP addresses from the system resolver (``getaddrinfo``)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def check_host(
    host: str, policy: AddressPolicy, resolve: Resolve = resolve_host
) -> tuple[IPAddress, ...]:
    """Resolve ``host`` and return its addresses if the policy allows every one.

    Raises :class:`AddressRefused` if any address is refused and
    :class:`UnresolvedHost` if the name has no address.
    """
    host = host.strip("[]")
    try:
        addresses: tuple[IPAddress, ...] = (ipaddress.ip_address(host),)
    except ValueError:
        try:
            answers = await resolve(host)
        except OSError as exc:  # socket.gaierror: NXDOMAIN, SERVFAIL, no resolver
            raise UnresolvedHost(f"{host} does not resolve ({exc}); will retry") from exc
        addresses = tuple(dict.fromkeys(ipaddress.ip_address(a) for a in answers))
        if not addresses:
            raise UnresolvedHost(f"{host} resolves to no address; will retry") from None
    for ip in addresses:
        if why := policy.refusal(ip):
            raise AddressRefused(_refused(host, ip, why))
    return addresses


def _refused(host: str, ip: IPAddress, why: str) -> str:
    if host == str(ip):
        return f"{ip} ({why}) refused by the SSRF guard"
    return f"{host} resolves to {ip} ({why}), refused by the SSRF guard"


# -- the guarded transport ---------------------------------------------------------


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses it has just checked."""

    def __init__(
        self,
        policy: AddressPolicy,
        resolve: Resolve = resolve_host,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._resolve = resolve
        self._inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await check_host(host, self._policy, self._resolve)
        # Try each checked address in resolver order (RFC 6724), as a plain
        # connect to the name would; only ever an address from this check.
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(ip),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # check_host returns at least one address
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused(f"unix socket {path} refused by the SSRF guard")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


DEFAULT_LIMITS: Final = httpx.Limits(max_connections=100, max_keepalive_connections=20)
"""httpx's own default pool size (``httpx.AsyncClient()`` uses the same)."""


class GuardedTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` whose connections go through :class:`GuardedBackend`.

    No proxy and no unix socket: either would connect somewhere other than the
    checked address.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolve: Resolve = resolve_host,
        verify: ssl.SSLContext | str | bool = True,
        http2: bool = False,
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        ssl_context = httpx.create_ssl_context(verify=verify)
        super().__init__(verify=ssl_context, http2=http2, limits=limits)
        if not isinstance(self._pool, httpcore.AsyncConnectionPool):  # pragma: no cover
            raise TypeError("httpx.AsyncHTTPTransport no longer keeps its pool in _pool")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=http2,
            network_backend=GuardedBackend(policy, resolve),
        )


class GuardedResolver(aiohttp.abc.AbstractResolver):
    """An aiohttp resolver that answers only with addresses the policy allows.

    aiohttp connects to exactly the addresses its resolver returns, so checking here has
    the same effect as :class:`GuardedBackend`: one lookup, checked, then connected to.
    The transport turns aiohttp's DNS cache off, so every new connection is checked again,
    as with httpcore.
    """

    def __init__(self, policy: AddressPolicy, resolve: Resolve = resolve_host) -> None:
        self._policy = policy
        self._resolve = resolve

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        addresses = await check_host(host, self._policy, self._resolve)
        return [
            {
                "hostname": host, "host": str(ip), "port": port,
                "family": socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                "proto": 0, "flags": socket.AI_NUMERICHOST,
            }
            for ip in addresses
        ]

    async def close(self) -> None:
        return None


class GuardedAiohttpTransport(AiohttpTransport):
    """httpx over aiohttp, whose connections go only to addresses the policy allows.

    aiohttp does not call its resolver for an IP-literal host, so those are checked here,
    before the request. No proxy (aiohttp's ``trust_env`` stays off) and no redirects
    (the transport never follows them). Faster per request than httpcore's pool, which
    is why the webhook channel uses it (tests/bench: webhook deliveries/s).
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolve: Resolve = resolve_host,
        verify: ssl.SSLContext | str | bool = True,
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        ssl_context = httpx.create_ssl_context(verify=verify)
        self._policy = policy
        super().__init__(verify=ssl_context, limits=limits, trust_env=False,
                         client=lambda: guarded_session(policy, resolve, ssl_context, limits))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        check_literal(request.url.host, self._policy)
        return await super().handle_async_request(request)


def guarded_session(policy: AddressPolicy, resolve: Resolve, ssl_context: ssl.SSLContext,
                    limits: httpx.Limits, **options: Any) -> aiohttp.ClientSession:
    """An aiohttp session connecting only to addresses `policy` allows (with
    :func:`check_literal` before each request: aiohttp resolves no IP literal)."""
    resolver = GuardedResolver(policy, resolve)
    limit = limits.max_connections or 0
    connector = (
        aiohttp.TCPConnector(resolver=resolver, ssl=ssl_context, use_dns_cache=False,
                             limit=limit, force_close=True)
        if limits.max_keepalive_connections == 0
        else aiohttp.TCPConnector(resolver=resolver, ssl=ssl_context, use_dns_cache=False,
                                  limit=limit, keepalive_timeout=limits.keepalive_expiry)
    )
    return aiohttp.ClientSession(connector=connector, trust_env=False, **options)


def check_literal(host: str, policy: AddressPolicy) -> None:
    """Raise :class:`AddressRefused` if `host` is an IP literal the policy refuses."""
    if (why := _literal_refusal(host, policy)) is not None:
        raise AddressRefused(why)


@functools.lru_cache(maxsize=4096)
def _literal_refusal(host: str, policy: AddressPolicy) -> str | None:
    # Cached: a worker sends to the same few hosts again and again, and parsing a name as
    # an address (to find it is not one) costs an exception each time.
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None  # a name: GuardedResolver checks what it resolves to
    why = policy.refusal(ip)
    return None if why is None else _refused(host, ip, why)


class GuardedClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` that only connects to addresses ``policy`` allows.

    Environment proxies are ignored (``trust_env=False``) and redirects are not
    followed, so every connection is one the guard checked. HTTP/1.1 goes over aiohttp
    (:class:`GuardedAiohttpTransport`); HTTP/2, which aiohttp lacks, over httpcore
    (:class:`GuardedTransport`).
    """

    def __init__(
        self,
        policy: AddressPolicy | None = None,
        *,
        resolve: Resolve = resolve_host,
        verify: ssl.SSLContext | str | bool = True,
        http2: bool = False,
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        self.policy = policy if policy is not None else AddressPolicy()
        transport: httpx.AsyncBaseTransport
        if http2:
            transport = GuardedTransport(
                self.policy, resolve=resolve, verify=verify, http2=True, limits=limits
            )
        else:
            transport = GuardedAiohttpTransport(
                self.policy, resolve=resolve, verify=verify, limits=limits
            )
        super().__init__(transport=transport, trust_env=False, follow_redirects=False)


# -- for clients that are not guarded ----------------------------------------------

Trace = Callable[[str, Mapping[str, Any]], Awaitable[None]]


def peer_check(host: str, policy: AddressPolicy) -> Trace:
    """An httpcore ``trace`` extension refusing any new connection to a refused peer.

    Pass it as ``extensions={"trace": peer_check(host, policy)}``. It runs when a
    TCP connection is established, before TLS or the request, and checks the
    address actually connected to, so a DNS answer that changed after
    :func:`check_host` cannot carry the request anywhere it refuses.
    """

    async def trace(event: str, info: Mapping[str, Any]) -> None:
        if event != "connection.connect_tcp.complete":
            return
        stream: httpcore.AsyncNetworkStream = info["return_value"]
        peer = stream.get_extra_info("server_addr")
        ip = ipaddress.ip_address(peer[0]) if peer else None
        why = "peer address unknown" if ip is None else policy.refusal(ip)
        if why is not None:
            await stream.aclose()  # httpcore does not close a stream whose trace raised
            raise AddressRefused(_refused(host, ip, why) if ip else f"{host}: {why}")

    return trace
