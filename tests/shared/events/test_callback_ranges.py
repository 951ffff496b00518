"""Callbacks to special-purpose addresses are refused: the shared address space that holds cloud
metadata (100.100.100.200), 6to4 and NAT64 wrappers of an internal IPv4 address, and the rest of
the IANA special-purpose registries, even where Python's ``is_global`` calls them global."""

from __future__ import annotations

import pytest

from shared.config import Settings
from shared.events.callbacks import check_callback
from shared.events.model import CallbackRefusedError

REFUSED = [
    "100.100.100.200",  # cloud metadata, in 100.64.0.0/10 (shared address space)
    "100.64.0.1",
    "2002::1",  # 6to4: 2002::/16, any address in it
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::1",
    "::127.0.0.1",  # IPv4-compatible, called global by ipaddress
    "2001::1",  # Teredo
    "2001:db8::1",
    "3fff::1",  # documentation, called global by ipaddress 3.11
    "5f00::1",  # SRv6 segment ids
    "fec0::1",
    "192.0.0.9",  # IETF protocol assignments
    "192.88.99.1",  # 6to4 relay anycast
    "198.18.0.1",
    "240.0.0.1",
    "0.1.2.3",
]


def settings_allowing(hosts: list[str]) -> Settings:
    return Settings(webhook_allowed_hosts={"acme": hosts})


@pytest.mark.parametrize("address", REFUSED)
def test_a_special_purpose_address_is_refused(address: str) -> None:
    host = f"[{address}]" if ":" in address else address
    settings = settings_allowing([address])
    with pytest.raises(CallbackRefusedError, match="private"):
        check_callback(settings, "acme", f"https://{host}/hook")


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700::1111"])
def test_a_global_address_is_accepted(address: str) -> None:
    host = f"[{address}]" if ":" in address else address
    checked = check_callback(settings_allowing([address]), "acme", f"https://{host}/hook")
    assert checked.addresses == (address,)
