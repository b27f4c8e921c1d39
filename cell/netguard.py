"""The SSRF guard: which destinations a cell may call on a project's behalf.

Webhook URLs and integration endpoints are typed in by customers, and the
cell's workers call them from inside the region's network. Without a guard
that would let anyone with an admin key probe the cell's Postgres, Redis or
the cloud metadata service (169.254.169.254). So a destination is resolved
(getaddrinfo, in a thread) and refused when ANY address it resolves to is
loopback, private, link-local, multicast, reserved or unspecified — including
those written as IPv4-mapped, 6to4 or NAT64 IPv6. An operator may allow the
loopback class (`relay dev` does, for local receivers) and the private class
(a self-hosted Jira on the company network); the other classes are never
callable.

The check runs when a destination is configured (so the customer hears about
it at once, as a 422) and again at delivery time (`check_url`), because DNS can
change in between. `check_url` returns the vetted addresses: a worker should
connect to one of them (not re-resolve the name) and not follow redirects,
or re-check each hop, so a rebinding resolver cannot swap the answer after the
check.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK, PRIVATE, LINK_LOCAL = "loopback", "private", "link-local"
MULTICAST, RESERVED, UNSPECIFIED = "multicast", "reserved", "unspecified"

MAX_URL = 2048
RESOLVE_TIMEOUT = 5.0

_NETS: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = [
    (cls, ipaddress.ip_network(net)) for cls, nets in {
        UNSPECIFIED: ["0.0.0.0/8", "::/128"],
        LOOPBACK: ["127.0.0.0/8", "::1/128"],
        PRIVATE: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7",
                  "64:ff9b:1::/48"],
        LINK_LOCAL: ["169.254.0.0/16", "fe80::/10"],
        MULTICAST: ["224.0.0.0/4", "ff00::/8"],
        RESERVED: ["192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
                   "240.0.0.0/4", "::/8", "100::/64", "2001::/23", "2001:db8::/32", "fec0::/10"],
    }.items() for net in nets
]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Refused(Exception):
    """The destination may not be called; the message says why without echoing secrets."""


class GuardSettings(Protocol):
    """The operator's allowances, as the cell settings carry them."""

    @property
    def webhooks_allow_loopback(self) -> bool: ...
    @property
    def webhooks_allow_private(self) -> bool: ...
    @property
    def egress_ports(self) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class Policy:
    """Which otherwise refused address classes the operator allows."""

    allow_loopback: bool = False
    allow_private: bool = False
    ports: frozenset[int] = frozenset()
    """The ports that may be called; empty: any."""

    @classmethod
    def of(cls, settings: GuardSettings) -> Policy:
        """The policy configured for this cell (RELAY_WEBHOOKS_ALLOW_LOOPBACK / _PRIVATE, RELAY_EGRESS_PORTS)."""
        return cls(settings.webhooks_allow_loopback, settings.webhooks_allow_private, frozenset(settings.egress_ports))

    def allows(self, cls_name: str | None) -> bool:
        """Whether an address of this class may be called."""
        return (cls_name is None or (cls_name == LOOPBACK and self.allow_loopback)
                or (cls_name == PRIVATE and self.allow_private))


@dataclass(frozen=True, slots=True)
class Destination:
    """A vetted URL: where to connect, and the addresses that passed the guard."""

    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def classify(address: IPAddress) -> str | None:
    """The refused class an address belongs to, or None for a public (globally routable) address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return classify(embedded)
    for cls_name, net in _NETS:
        if address in net:
            return cls_name
    # Anything else the IANA registries do not call global (new special-purpose blocks) is refused too.
    return None if address.is_global else RESERVED


def check_address(address: IPAddress | str, policy: Policy) -> IPAddress:
    """The address if it may be called under `policy` (e.g. the peer of an open connection), else Refused."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    cls_name = classify(ip)
    if not policy.allows(cls_name):
        raise Refused(f"destination resolves to a {cls_name} address ({ip}), which this cell does not call")
    return ip


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to; getaddrinfo runs in a thread so the event loop never blocks."""
    try:
        infos = await asyncio.wait_for(
            asyncio.to_thread(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT)
    except (TimeoutError, socket.gaierror, UnicodeError) as exc:
        raise Refused("destination host does not resolve") from exc
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])  # drop an IPv6 zone id
        if ip not in found:
            found.append(ip)
    if not found:
        raise Refused("destination host does not resolve")
    return found


def parse_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL without credentials, else Refused."""
    if len(url) > MAX_URL:
        raise Refused(f"URL longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused("not a valid URL") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused("URL must be http or https")
    if not parts.hostname:
        raise Refused("URL has no host")
    if parts.username is not None or parts.password is not None:
        raise Refused("URL must not carry credentials")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


async def check_host(host: str, port: int, policy: Policy) -> tuple[IPAddress, ...]:
    """The addresses of `host` when every one of them may be called on `port`, else Refused."""
    if policy.ports and port not in policy.ports:
        allowed = ", ".join(str(p) for p in sorted(policy.ports))
        raise Refused(f"port {port} is not one this cell's network lets it call (allowed: {allowed})")
    return tuple(check_address(ip, policy) for ip in await resolve(host, port))


async def check_url(url: str, policy: Policy) -> Destination:
    """Vet an http(s) URL before calling it: at configuration time and again at every delivery."""
    scheme, host, port = parse_url(url)
    return Destination(scheme, host, port, await check_host(host, port, policy))
