import base64
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
import trustme

from connectors import ssrf
from connectors.emulators.webhook_receiver import WebhookReceiver
from connectors.ssrf import AddressPolicy, AddressRefused, UnresolvedHost, address_policy
from connectors.verdict import Outcome
from connectors.webhook import WebhookChannel, WebhookConfig, deliver, make_client

SECRET = "whsec_" + base64.b64encode(b"0" * 32).decode()
LOOPBACK = ("127.0.0.0/8",)
NO_ALLOW_LIST = AddressPolicy()


def make_message(url: str, delivery_id: str = "dlv_1") -> dict[str, Any]:
    return {
        "delivery_id": delivery_id,
        "notification_id": "ntf_1",
        "tenant_id": "acme",
        "channel": "webhook",
        "category": "billing",
        "priority": "normal",
        "recipient": {"user_id": "u-42", "webhook_url": url},
        "title": "Invoice paid",
        "body": "Invoice #7 was paid.",
        "data": {},
        "metadata": {},
        "attempt": 1,
        "created_at": 1_699_999_999_123,
    }


class FakeDNS:
    """A resolver answering from a table, recording every lookup."""

    def __init__(self, answers: dict[str, list[Sequence[str]]]) -> None:
        self._answers = answers
        self.lookups: list[str] = []

    async def __call__(self, host: str) -> Sequence[str]:
        self.lookups.append(host)
        queue = self._answers.get(host)
        if not queue:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return queue.pop(0) if len(queue) > 1 else queue[0]


def fake_dns(**answers: Sequence[str]) -> FakeDNS:
    return FakeDNS({host.replace("_", "."): [addresses] for host, addresses in answers.items()})


# -- the policy, address by address ----------------------------------------------

REFUSED_ROWS = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("10.1.2.3", "private"),  # RFC 1918
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),  # cloud metadata
    ("169.254.0.1", "link-local"),
    ("100.64.0.1", "CGNAT"),  # RFC 6598; not is_private in Python 3.11
    ("100.127.255.254", "CGNAT"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "private"),  # "this network", RFC 1122
    ("224.0.0.1", "multicast"),  # is_global in Python 3.11
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.1", "documentation"),  # RFC 5737
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("198.18.0.1", "private"),  # benchmarking, RFC 2544
    ("192.0.0.8", "IETF protocol assignment"),  # is_global in Python 3.11
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fc00::1", "unique-local"),
    ("fd12:3456::1", "unique-local"),
    ("fe80::1", "link-local"),
    ("fe80::1%1", "link-local"),  # getaddrinfo adds the scope to link-local answers
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("::ffff:127.0.0.1", "IPv4-mapped 127.0.0.1: loopback"),
    ("::ffff:10.0.0.1", "IPv4-mapped 10.0.0.1: private"),
    ("::ffff:169.254.169.254", "IPv4-mapped 169.254.169.254: link-local"),
    ("::7f00:1", "reserved"),  # deprecated IPv4-compatible ::127.0.0.1
    ("2002:7f00:1::", "6to4 127.0.0.1: loopback"),
    ("2002:a00:1::1", "6to4 10.0.0.1: private"),
    ("64:ff9b::7f00:1", "NAT64 127.0.0.1: loopback"),  # RFC 6052 well-known prefix
    ("64:ff9b::a9fe:a9fe", "NAT64 169.254.169.254: link-local"),
    ("64:ff9b:1::1", "reserved"),  # RFC 8215 local-use NAT64
    ("100::1", "reserved"),  # discard-only, RFC 6666
]


@pytest.mark.parametrize(("address", "why"), REFUSED_ROWS)
def test_refused(address: str, why: str) -> None:
    assert NO_ALLOW_LIST.refusal(ipaddress.ip_address(address)) == why


ALLOWED_ROWS = [
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above
    "172.32.0.1",  # just outside 172.16.0.0/12
    "2606:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:93.184.216.34",  # IPv4-mapped public address
    "2002:5db8:d822::1",  # 6to4 of 93.184.216.34
    "64:ff9b::5db8:d822",  # NAT64 (DNS64) of 93.184.216.34
]


@pytest.mark.parametrize("address", ALLOWED_ROWS)
def test_public_addresses_are_allowed(address: str) -> None:
    assert NO_ALLOW_LIST.refusal(ipaddress.ip_address(address)) is None


ALLOW_LIST_ROWS = [
    # allow-list, address, refusal
    (LOOPBACK, "127.0.0.1", None),
    (LOOPBACK, "127.255.0.9", None),
    (LOOPBACK, "::ffff:127.0.0.1", None),  # the mapped form is the same host
    (LOOPBACK, "::1", "loopback"),  # IPv4 ranges open no IPv6 address
    (LOOPBACK, "10.0.0.1", "private"),
    (LOOPBACK, "2002:7f00:1::", None),  # the embedded IPv4 address decides, allow-list too
    (LOOPBACK, "64:ff9b::a00:1", "NAT64 10.0.0.1: private"),
    (("10.20.0.0/16",), "10.20.3.4", None),
    (("10.20.0.0/16",), "10.21.0.1", "private"),
    (("::1/128", "fd00::/8"), "::1", None),
    (("::1/128", "fd00::/8"), "fd00::5", None),
    (("169.254.169.254",), "169.254.169.254", None),  # a bare address is a /32
]


@pytest.mark.parametrize(("allowed", "address", "why"), ALLOW_LIST_ROWS)
def test_allow_list(allowed: tuple[str, ...], address: str, why: str | None) -> None:
    assert address_policy(allowed).refusal(ipaddress.ip_address(address)) == why


@pytest.mark.parametrize("cidr", ["127.0.0.1/8", "10.0.0.0/33", "localhost", ""])
def test_allow_list_refuses_what_is_not_a_network(cidr: str) -> None:
    with pytest.raises(ValueError, match="not a CIDR network"):
        address_policy((cidr,))


def test_allow_list_tolerates_spaces_from_a_comma_separated_setting() -> None:
    assert address_policy((" 127.0.0.0/8",)) == address_policy(LOOPBACK)


# -- check_host: resolve, then check every answer ---------------------------------


async def test_a_public_name_resolving_to_loopback_is_refused() -> None:
    dns = fake_dns(hooks_example_test=["127.0.0.1"])

    with pytest.raises(AddressRefused) as refused:
        await ssrf.check_host("hooks.example.test", NO_ALLOW_LIST, dns)

    assert str(refused.value) == (
        "hooks.example.test resolves to 127.0.0.1 (loopback), refused by the SSRF guard"
    )
    verdict = refused.value.verdict
    assert verdict.outcome is Outcome.ADDRESS_INVALID
    assert "resolves to 127.0.0.1 (loopback)" in verdict.reason


async def test_the_allow_list_opens_a_name_resolving_into_it() -> None:
    dns = fake_dns(hooks_example_test=["127.0.0.1"])

    addresses = await ssrf.check_host("hooks.example.test", address_policy(LOOPBACK), dns)

    assert addresses == (ipaddress.ip_address("127.0.0.1"),)


async def test_one_forbidden_answer_among_public_ones_refuses_the_name() -> None:
    dns = fake_dns(hooks_example_test=["93.184.216.34", "10.0.0.1", "2606:4700::1111"])

    with pytest.raises(AddressRefused, match=r"resolves to 10\.0\.0\.1 \(private\)"):
        await ssrf.check_host("hooks.example.test", NO_ALLOW_LIST, dns)


async def test_public_answers_are_returned_in_order_without_repeats() -> None:
    dns = fake_dns(hooks_example_test=["2606:4700::1111", "93.184.216.34", "2606:4700::1111"])

    addresses = await ssrf.check_host("hooks.example.test", NO_ALLOW_LIST, dns)

    assert [str(a) for a in addresses] == ["2606:4700::1111", "93.184.216.34"]


async def test_a_name_that_does_not_resolve_is_retried() -> None:
    with pytest.raises(UnresolvedHost) as unresolved:
        await ssrf.check_host("nowhere.example.test", NO_ALLOW_LIST, fake_dns())

    verdict = unresolved.value.verdict
    assert verdict.outcome is Outcome.RETRY
    assert "nowhere.example.test does not resolve" in verdict.reason


async def test_an_empty_answer_is_retried() -> None:
    with pytest.raises(UnresolvedHost, match="no address"):
        await ssrf.check_host("hooks.example.test", NO_ALLOW_LIST, fake_dns(hooks_example_test=[]))


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("10.0.0.1", "10.0.0.1 (private) refused"),
        ("[::1]", "::1 (loopback) refused"),
        ("::ffff:7f00:1", "::ffff:7f00:1 (IPv4-mapped 127.0.0.1: loopback) refused"),
    ],
)
async def test_ip_literals_are_checked_without_dns(host: str, message: str) -> None:
    dns = fake_dns()

    with pytest.raises(AddressRefused, match=message.replace("(", r"\(").replace(")", r"\)")):
        await ssrf.check_host(host, NO_ALLOW_LIST, dns)
    assert dns.lookups == []


async def test_localhost_from_etc_hosts_is_refused() -> None:
    """The real resolver: localhost is 127.0.0.1 in /etc/hosts, no DNS server needed."""
    with pytest.raises(AddressRefused, match=r"localhost resolves to (127\.0\.0\.1|::1)"):
        await ssrf.check_host("localhost", NO_ALLOW_LIST)


# -- the guarded client against the real receiver ---------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(SECRET) as receiver:
        yield receiver


# localhost may also resolve to ::1 where /etc/hosts says so; the guard refuses a
# name if any answer is refused, so the local allow-list opens both loopbacks.
LOCALHOST = ("127.0.0.0/8", "::1/128")


async def test_localhost_is_refused_without_an_allow_list(receiver: WebhookReceiver) -> None:
    channel = WebhookChannel(WebhookConfig(SECRET))
    try:
        verdict = await channel.send(make_message(f"http://localhost:{receiver.port}/hook"))
    finally:
        await channel.aclose()

    assert verdict.outcome is Outcome.ADDRESS_INVALID
    assert "localhost resolves to" in verdict.reason
    assert receiver.received == []


async def test_localhost_is_delivered_with_the_allow_list(receiver: WebhookReceiver) -> None:
    channel = WebhookChannel(WebhookConfig(SECRET, allowed_networks=LOCALHOST))
    try:
        verdict = await channel.send(make_message(f"http://localhost:{receiver.port}/hook"))
    finally:
        await channel.aclose()

    assert verdict.outcome is Outcome.DELIVERED
    [received] = await receiver.wait_for(1, timeout=5)
    assert received.host == f"localhost:{receiver.port}"


async def test_the_connection_goes_to_the_checked_address_under_the_name(
    receiver: WebhookReceiver,
) -> None:
    """hooks.example.test exists in no DNS: only the checked answer can have been dialled."""
    config = WebhookConfig(SECRET, allowed_networks=LOOPBACK)
    dns = fake_dns(hooks_example_test=["127.0.0.1"])
    url = f"http://hooks.example.test:{receiver.port}/hook"

    async with make_client(config, resolve=dns) as client:
        channel = WebhookChannel(config, client)
        verdicts = [await channel.send(make_message(url, f"dlv_{n}")) for n in range(3)]

    assert [v.outcome for v in verdicts] == [Outcome.DELIVERED] * 3
    received = await receiver.wait_for(3, timeout=5)
    assert {r.host for r in received} == {f"hooks.example.test:{receiver.port}"}
    assert dns.lookups == ["hooks.example.test"]  # one connection, kept alive, one lookup


async def test_every_new_connection_is_checked_again(receiver: WebhookReceiver) -> None:
    """DNS rebinding: the second lookup answers a private address; nothing is sent there."""
    config = WebhookConfig(SECRET, allowed_networks=LOOPBACK)
    dns = FakeDNS({"hooks.example.test": [["127.0.0.1"], ["10.0.0.1"]]})
    url = f"http://hooks.example.test:{receiver.port}/hook"
    no_keepalive = httpx.Limits(max_keepalive_connections=0)

    async with make_client(config, resolve=dns, limits=no_keepalive) as client:
        first = await deliver(client, make_message(url, "dlv_1"), config)
        second = await deliver(client, make_message(url, "dlv_2"), config)

    assert first.outcome is Outcome.DELIVERED
    assert second.outcome is Outcome.ADDRESS_INVALID
    assert "resolves to 10.0.0.1 (private)" in second.reason
    assert dns.lookups == ["hooks.example.test", "hooks.example.test"]
    assert receiver.by_id() == {"dlv_1": 1}


async def test_the_next_checked_address_is_tried_when_one_does_not_answer(
    receiver: WebhookReceiver,
) -> None:
    config = WebhookConfig(SECRET, allowed_networks=LOOPBACK)
    # Nothing listens on 127.0.0.2 (the receiver is bound to 127.0.0.1 only).
    dns = fake_dns(hooks_example_test=["127.0.0.2", "127.0.0.1"])
    url = f"http://hooks.example.test:{receiver.port}/hook"

    async with make_client(config, resolve=dns) as client:
        verdict = await deliver(client, make_message(url), config)

    assert verdict.outcome is Outcome.DELIVERED


async def test_an_unresolved_name_is_a_retry() -> None:
    config = WebhookConfig(SECRET)

    async with make_client(config, resolve=fake_dns()) as client:
        verdict = await deliver(client, make_message("https://gone.example.test/hook"), config)

    assert verdict.outcome is Outcome.RETRY
    assert "gone.example.test does not resolve" in verdict.reason


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1:9092/",
        "http://[::1]:8080/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0:8080/",
    ],
)
async def test_ip_literal_urls_are_refused(url: str) -> None:
    config = WebhookConfig(SECRET)
    dns = fake_dns()

    async with make_client(config, resolve=dns) as client:
        verdict = await deliver(client, make_message(url), config)

    assert verdict.outcome is Outcome.ADDRESS_INVALID
    assert "refused by the SSRF guard" in verdict.reason
    assert dns.lookups == []


async def test_without_the_guard_loopback_is_delivered(receiver: WebhookReceiver) -> None:
    channel = WebhookChannel(WebhookConfig(SECRET, ssrf_guard=False))
    try:
        verdict = await channel.send(make_message(receiver.url + "/hook"))
    finally:
        await channel.aclose()

    assert verdict.outcome is Outcome.DELIVERED


# -- TLS: SNI and certificate checked against the name, not the IP -----------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_receiver(ca: trustme.CA) -> AsyncIterator[WebhookReceiver]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.example.test").configure_cert(server_context)
    async with WebhookReceiver(SECRET, ssl_context=server_context) as receiver:
        yield receiver


@pytest.mark.parametrize(
    ("name", "outcome"),
    [
        ("hooks.example.test", Outcome.DELIVERED),  # the certificate's only name
        ("other.example.test", Outcome.RETRY),  # same IP, but the certificate is not for it
    ],
)
async def test_tls_is_verified_for_the_name(
    ca: trustme.CA, tls_receiver: WebhookReceiver, name: str, outcome: Outcome
) -> None:
    config = WebhookConfig(SECRET, allowed_networks=LOOPBACK)
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    dns = FakeDNS({name: [["127.0.0.1"]]})

    async with ssrf.GuardedClient(config.address_policy, resolve=dns, verify=trust) as client:
        channel = WebhookChannel(config, client)
        verdict = await channel.send(make_message(f"https://{name}:{tls_receiver.port}/hook"))

    assert verdict.outcome is outcome
    if outcome is Outcome.DELIVERED:
        [received] = await tls_receiver.wait_for(1, timeout=5)
        assert received.host == f"hooks.example.test:{tls_receiver.port}"
    else:
        assert "certificate verify failed" in verdict.reason
        assert tls_receiver.received == []


# -- a client that is not guarded --------------------------------------------------


async def test_an_unguarded_client_gets_the_check_before_the_request(
    receiver: WebhookReceiver,
) -> None:
    async with httpx.AsyncClient() as client:
        verdict = await deliver(
            client, make_message(f"http://localhost:{receiver.port}/hook"), WebhookConfig(SECRET)
        )

    assert verdict.outcome is Outcome.ADDRESS_INVALID
    assert receiver.received == []


async def test_peer_check_refuses_the_address_actually_connected_to(
    receiver: WebhookReceiver,
) -> None:
    """What stops a rebinding between check_host and an unguarded client's own lookup."""
    url = f"http://localhost:{receiver.port}/hook"

    async with httpx.AsyncClient() as client:
        refusing = ssrf.peer_check("localhost", NO_ALLOW_LIST)
        with pytest.raises(AddressRefused, match=r"localhost resolves to 127\.0\.0\.1"):
            await client.post(url, extensions={"trace": refusing})
        allowed = ssrf.peer_check("localhost", address_policy(LOCALHOST))
        response = await client.post(url, extensions={"trace": allowed})

    assert response.status_code == 401  # reached the receiver (unsigned, so 401)
    assert len(receiver.received) == 1


async def test_a_guarded_client_with_another_policy_still_gets_the_configs_check(
    receiver: WebhookReceiver,
) -> None:
    """The config's policy is enforced whatever client it is given."""
    config = WebhookConfig(SECRET)  # no allow-list
    async with ssrf.GuardedClient(address_policy(LOCALHOST)) as client:
        verdict = await deliver(client, make_message(receiver.url + "/hook"), config)

    assert verdict.outcome is Outcome.ADDRESS_INVALID
    assert receiver.received == []
