"""The SSRF guard: which addresses and URLs a cell's workers may call."""

from __future__ import annotations

import ipaddress

import pytest

from cell import netguard
from cell.netguard import Policy, Refused

STRICT = Policy()

REFUSED = {
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "::1": "loopback",
    "10.0.0.1": "private",
    "10.255.255.255": "private",
    "172.16.0.1": "private",
    "172.31.255.254": "private",
    "192.168.1.10": "private",
    "100.64.0.1": "private",
    "fc00::1": "private",
    "fd12:3456::1": "private",
    "169.254.169.254": "link-local",
    "169.254.0.1": "link-local",
    "fe80::1": "link-local",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    "192.0.2.5": "reserved",
    "2001:db8::1": "reserved",
    # The same addresses written as IPv6.
    "::ffff:127.0.0.1": "loopback",
    "::ffff:10.0.0.1": "private",
    "::ffff:169.254.169.254": "link-local",
    "2002:a9fe:a9fe::1": "link-local",  # 6to4 of 169.254.169.254
    "64:ff9b::7f00:1": "loopback",  # NAT64 of 127.0.0.1
    "::127.0.0.1": "reserved",  # IPv4-compatible
}
PUBLIC = ["1.1.1.1", "8.8.8.8", "93.184.216.34", "172.32.0.1", "11.0.0.1", "2606:4700:4700::1111",
          "::ffff:1.1.1.1"]


@pytest.mark.parametrize(("address", "cls"), sorted(REFUSED.items()))
def test_special_addresses_are_classified_and_refused(address: str, cls: str) -> None:
    assert netguard.classify(ipaddress.ip_address(address)) == cls
    with pytest.raises(Refused, match=cls):
        netguard.check_address(address, STRICT)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert netguard.classify(ipaddress.ip_address(address)) is None
    assert netguard.check_address(address, STRICT) == ipaddress.ip_address(address)


def test_operator_allowances_open_only_their_class() -> None:
    loopback, private = Policy(allow_loopback=True), Policy(allow_private=True)
    netguard.check_address("127.0.0.1", loopback)
    netguard.check_address("::ffff:127.0.0.1", loopback)
    netguard.check_address("10.1.2.3", private)
    netguard.check_address("fd00::5", private)
    with pytest.raises(Refused):
        netguard.check_address("10.1.2.3", loopback)
    with pytest.raises(Refused):
        netguard.check_address("127.0.0.1", private)
    everything = Policy(allow_loopback=True, allow_private=True)
    for never in ("169.254.169.254", "::ffff:169.254.169.254", "0.0.0.0", "224.0.0.1", "240.0.0.1"):
        with pytest.raises(Refused):
            netguard.check_address(never, everything)


async def test_urls_are_resolved_and_every_address_checked() -> None:
    for url in ("http://127.0.0.1/hook", "http://localhost:8080/x", "http://[::1]/", "http://10.0.0.1/",
                "https://169.254.169.254/latest/meta-data/", "http://[::ffff:127.0.0.1]/",
                "http://2130706433/", "http://0x7f000001/", "http://0/"):
        with pytest.raises(Refused):
            await netguard.check_url(url, STRICT)
    dest = await netguard.check_url("https://1.1.1.1/hooks?x=1", STRICT)
    assert (dest.scheme, dest.host, dest.port) == ("https", "1.1.1.1", 443)
    assert dest.addresses == (ipaddress.ip_address("1.1.1.1"),)
    local = await netguard.check_url("http://127.0.0.1:9999/hook", Policy(allow_loopback=True))
    assert local.port == 9999 and local.addresses == (ipaddress.ip_address("127.0.0.1"),)


async def test_malformed_urls_are_refused() -> None:
    for url, why in [("ftp://1.1.1.1/", "http or https"), ("file:///etc/passwd", "http or https"),
                     ("gopher://1.1.1.1:70/", "http or https"), ("http:///nohost", "no host"),
                     ("https://user:pw@1.1.1.1/", "credentials"), ("http://1.1.1.1:99999/", "valid URL"),
                     ("https://1.1.1.1/" + "a" * 2048, "longer"),
                     ("http://no-such-host.invalid/", "does not resolve")]:
        with pytest.raises(Refused, match=why):
            await netguard.check_url(url, STRICT)


async def test_only_the_ports_the_network_allows_are_called() -> None:
    """RELAY_EGRESS_PORTS: a destination on another port is refused when configured, not lost at delivery."""
    policy = Policy(allow_loopback=True, ports=frozenset({443, 587}))
    assert (await netguard.check_url("https://127.0.0.1/hook", policy)).port == 443
    with pytest.raises(Refused, match=r"port 8080 is not one this cell's network lets it call \(allowed: 443, 587\)"):
        await netguard.check_url("http://127.0.0.1:8080/hook", policy)
    with pytest.raises(Refused, match="port 80 "):  # the scheme's default port counts too
        await netguard.check_url("http://127.0.0.1/hook", policy)
    with pytest.raises(Refused, match="port 25 "):
        await netguard.check_host("127.0.0.1", 25, policy)
    assert await netguard.check_host("127.0.0.1", 25, Policy(allow_loopback=True))  # empty: any port
