"""``names``' address test answers as ``ipaddress.ip_address`` does, host names refused
without asking it (its exception cost an install 0.1-0.5 ms a name, cold)."""

from __future__ import annotations

import ipaddress

import pytest

from harper_certd import names

CASES = [
    "1.2.3.4",
    "0.0.0.0",  # noqa: S104 - a name to test, not an address to bind
    "255.255.255.255",
    "[1.2.3.4]",
    "01.2.3.4",
    "1.2.3.04",
    "256.1.1.1",
    "1.2.3",
    "1.2.3.4.5",
    "1.2.3.4 ",
    " 1.2.3.4",
    "1..2.3",
    "\u0661.\u0662.\u0663.\u0664",  # Arabic-Indic digits: not decimal octets
    "::1",
    "[::1]",
    "fe80::1%eth0",
    "::ffff:1.2.3.4",
    "1:2",
    "2001:db8::",
    "nodea",
    "a.b.c.d",
    "localhost",
    "nodea.example.com",
    "xn--bcher-kva.example",
    "",
    "[",
    "[]",
]


@pytest.mark.parametrize("name", CASES)
def test_address_or_not_as_ipaddress_says(name: str) -> None:
    try:
        expected: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(
            name.strip("[]")
        )
    except ValueError:
        expected = None
    assert names._as_ip(name) == expected
    assert names.is_ip_address(name) is (expected is not None)
