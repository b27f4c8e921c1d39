"""Client addresses: who the client is behind trusted proxies, and reduced before anything stores or logs them."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def truncate_ip(ip: str | None) -> str | None:
    """IPv4 to its /24 and IPv6 to its /48, so an audit entry never holds a full address."""
    if not ip:
        return None
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False).network_address)


@functools.lru_cache(maxsize=8)
def networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    """Parsed CIDRs (a bare address is its own /32 or /128); ValueError names a bad one."""
    out = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{cidr!r} is not an address or CIDR") from None
    return tuple(out)


def _trusted(ip: str, trusted: tuple[Network, ...]) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in trusted)


def client_address(peer: str | None, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str | None:
    """The client's address: the peer, unless the peer is a trusted proxy; then the rightmost address of
    `X-Forwarded-For` that is not a trusted proxy (each proxy appends the address it saw, so only the hops
    right of the first untrusted one are believed). A malformed entry stops the walk at the proxy that
    reported it; with every hop trusted, the leftmost one is the client.

    `forwarded_for` is each `X-Forwarded-For` header value, in the order received.
    """
    if peer is None or not trusted or not _trusted(peer, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops):
        try:
            hop = str(ipaddress.ip_address(hop))
        except ValueError:
            return client
        client = hop
        if not _trusted(hop, trusted):
            return hop
    return client
