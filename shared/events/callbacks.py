"""Callback URLs: the tenant's allow-list of hosts, and no address but a global one (server-side
request forgery).

A host is resolved and every address it resolves to is checked, at submit and again right
before each delivery (DNS can change in between); the delivery then connects to the addresses
it checked, never to a second lookup.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.config import Settings
from shared.events.model import DEFAULT_TENANT, CallbackRefusedError

MAX_URL_CHARS = 2048
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Callback:
    """A checked callback: where to connect (``addresses``, each checked) and what to ask for."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


def _host_allowed(host: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*.") and host.endswith(pattern[1:]) and host != pattern[2:]:
            return True
        if host == pattern:
            return True
    return False


# Every special-purpose block of the IANA registries (iana-ipv4-special-registry,
# iana-ipv6-special-registry), refused even where the registry calls it globally reachable:
# ``is_global`` alone lets through 100.64.0.0/10 on Python before 3.12.4 (its shared address
# space holds cloud metadata at 100.100.100.200), 6to4 and NAT64, which wrap an IPv4 address
# that may be internal, and the anycast relays. A receiver is never one of these.
SPECIAL_PURPOSE = tuple(
    ipaddress.ip_network(block)
    for block in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.31.196.0/24", "192.52.193.0/24", "192.88.99.0/24",
        "192.168.0.0/16", "192.175.48.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
        "224.0.0.0/4", "240.0.0.0/4",
        "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "100:0:0:1::/64", "2001::/23", "2001:db8::/32",
        "2002::/16", "2620:4f:8000::/48", "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10",
        "ff00::/8",
    )
)  # fmt: skip
# Outside 2000::/3 nothing is allocated for global unicast (::/8 holds the IPv4-compatible
# ::a.b.c.d, which Python calls global).
IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def _public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    if isinstance(address, ipaddress.IPv6Address) and address not in IPV6_GLOBAL_UNICAST:
        return False
    return address.is_global and not any(address in block for block in SPECIAL_PURPOSE)


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal is its own)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise CallbackRefusedError("callback_url: host does not resolve") from None
    # Drop an IPv6 zone id ("fe80::1%eth0") before parsing.
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def check_callback(settings: Settings, tenant: str | None, url: str) -> Callback:
    """Check ``url`` against the tenant's allow-list and the address rules.

    Raises:
        CallbackRefusedError: not http(s), a host not allowed for the tenant, plain http or an
            address that is not global or lies in a special-purpose block (:data:`SPECIAL_PURPOSE`)
            for a host not in ``webhook_allow_private``, or a host that does not resolve.
    """
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
        raise CallbackRefusedError("callback_url must be a URL of at most 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise CallbackRefusedError("callback_url is not a valid URL") from None
    host = (parts.hostname or "").lower().rstrip(".")
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
        raise CallbackRefusedError("callback_url must be http(s)://host/path without credentials")
    if not _host_allowed(host, settings.webhook_allowed_hosts.get(tenant or DEFAULT_TENANT, [])):
        raise CallbackRefusedError("callback_url: host is not on the tenant's allow-list")
    internal = _host_allowed(host, settings.webhook_allow_private)
    if parts.scheme != "https" and not internal:
        raise CallbackRefusedError("callback_url must use https")
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = resolve(host, port)
    if not addresses or not (internal or all(_public(a) for a in addresses)):
        raise CallbackRefusedError("callback_url: host resolves to a private or loopback address")
    unique = tuple(dict.fromkeys(str(a) for a in addresses))
    return Callback(url=url, scheme=parts.scheme, host=host, port=port, addresses=unique)
