"""Client addresses, reduced before anything stores or logs them."""

from __future__ import annotations

import ipaddress


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
