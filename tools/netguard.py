"""What the gateway's own fetches may connect to: the guard against server-side request forgery.

When the gateway fetches a URL itself (an http tool's service), neither a model nor a caller may
make it reach into its own network. Loopback, link-local (cloud metadata at 169.254.169.254
among them), private, shared (CGNAT), multicast, unspecified and other non-global addresses are
refused unless ``FetchPolicy.allow`` holds a network with the address in it. An address with an
IPv4 address inside it (IPv4-mapped, NAT64, 6to4) is judged by that IPv4 address.

The check runs where each address is decided, before any socket to it exists:

* ``GuardedResolver`` checks every address a host name resolves to, on every connection (the
  connector keeps no DNS cache), so a name that rebinds to a forbidden address is caught on the
  connection that would use it; a name with any forbidden address is refused whole;
* the connector's socket factory checks the address of every socket it is asked for: IP
  literals (aiohttp does not resolve them) and each redirect hop included.

``guarded_session`` builds an aiohttp session with both, which also ignores proxy variables;
``read_capped`` bounds what is read of a reply. It lives in ``tools`` because http tools are its
only caller today; the gateway builds the session and hands it to them, so another fetcher
(``providers`` inlining media, say) would take the same session without importing this module.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import aiohttp
import msgspec
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from msgspec import Struct

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

SESSION_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)
"""For a fetch that sets no timeout of its own (an http tool sets its ``timeout_s``)."""


class FetchPolicy(Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The gateway file's ``fetch_policy`` section: what the gateway's own fetches may reach."""

    allow: list[str] = msgspec.field(default_factory=list)
    """Networks (``10.20.0.0/16``, ``fd00::/8``) or single addresses (``10.20.0.7``) a fetch may
    connect to although they are not public, e.g. the internal services of http tools."""

    def __post_init__(self) -> None:
        for entry in self.allow:
            try:
                ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"allow: {entry!r} is not an IP address or network") from None


_METADATA = frozenset(ip_address(text) for text in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))
"""Cloud instance metadata services (AWS, GCP, Azure, OCI; AWS over IPv6; Alibaba)."""

_CATEGORIES: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = tuple(
    (label, tuple(ip_network(text) for text in networks)) for label, networks in (
        ("unspecified", ("0.0.0.0/8", "::/128")),
        ("loopback", ("127.0.0.0/8", "::1/128")),
        ("link-local", ("169.254.0.0/16", "fe80::/10")),
        ("private", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fec0::/10")),
        ("shared (CGNAT)", ("100.64.0.0/10",)),
        ("multicast", ("224.0.0.0/4", "ff00::/8")),
    )
)
_NAT64 = ip_network("64:ff9b::/96")


def refusal(address: IPAddress) -> str | None:
    """Why a fetch may not connect to ``address`` unless allowed (``loopback``, ``private``...);
    None for a public address."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return refusal(embedded)
    if address in _METADATA:
        return "cloud metadata"
    for label, networks in _CATEGORIES:
        if any(address in network for network in networks):
            return label
    return None if address.is_global else "reserved"


def _embedded_ipv4(address: IPAddress) -> IPv4Address | None:
    """The IPv4 address a packet to ``address`` may end up at: IPv4-mapped (``::ffff:a.b.c.d``,
    which the kernel sends over IPv4), NAT64 (``64:ff9b::a.b.c.d``) and 6to4 (``2002:ab:cd::``)."""
    if not isinstance(address, IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


class ForbiddenAddress(OSError):
    """A fetch would connect to an address the policy refuses. An ``OSError`` so that aiohttp
    reports it as the connection's failure (``ClientConnectorError.os_error``)."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        where = address if host == address else f"{host} ({address})"
        super().__init__(errno.EACCES, f"{where} is a {reason} address, which the fetch policy does not allow")


class AddressScreen:
    """Refuses the addresses ``refusal`` names, except those in the allowed networks."""

    def __init__(self, allow: Iterable[str]) -> None:
        self._allowed = tuple(ip_network(entry, strict=False) for entry in allow)

    def check(self, host: str, address: str) -> None:
        """Raise ``ForbiddenAddress`` unless a fetch may connect to ``address`` (``host`` names
        it in the error: the name it was resolved from, or the address itself)."""
        parsed = ip_address(address)
        reason = refusal(parsed)
        if reason is not None and not self._allows(parsed):
            raise ForbiddenAddress(host, address, reason)

    def _allows(self, address: IPAddress) -> bool:
        embedded = _embedded_ipv4(address)
        return any(address in network or (embedded is not None and embedded in network)
                   for network in self._allowed)

    def open_socket(self, addr_info: tuple[int, int, int, str, tuple[object, ...]]) -> socket.socket:
        """The connector's socket factory: a socket only for an address the policy allows."""
        family, kind, proto, _, sockaddr = addr_info
        address = str(sockaddr[0])
        self.check(address, address)
        return socket.socket(family=family, type=kind, proto=proto)


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` (the system's resolver by default) and refuses a host name with
    any forbidden address."""

    def __init__(self, screen: AddressScreen, inner: AbstractResolver | None = None) -> None:
        self._screen = screen
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            self._screen.check(host, result["host"])
        return results

    async def close(self) -> None:
        await self._inner.close()


def guarded_session(policy: FetchPolicy, *, resolver: AbstractResolver | None = None) -> aiohttp.ClientSession:
    """A session whose every connection the policy checks. ``resolver`` replaces the system's
    (tests map names to the addresses they want). Call it inside the running event loop."""
    screen = AddressScreen(policy.allow)
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(screen, resolver), use_dns_cache=False,
                                     socket_factory=screen.open_socket)
    return aiohttp.ClientSession(connector=connector, trust_env=False, timeout=SESSION_TIMEOUT)


def refused_by_policy(error: aiohttp.ClientError) -> bool:
    """Whether a connection failed because the policy refused its address."""
    return isinstance(getattr(error, "os_error", None), ForbiddenAddress)


async def read_capped(reply: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The reply's body, or None as soon as it is known to pass ``limit`` bytes (what is left
    of it is never read)."""
    if reply.content_length is not None and reply.content_length > limit:
        return None
    body = bytearray()
    async for chunk in reply.content.iter_chunked(65536):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)
