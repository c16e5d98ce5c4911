"""Standard Webhooks signing and the guard that keeps deliveries off internal networks.

Threat model: a tenant registers the URL, so a delivery is a request the service makes on
the tenant's behalf from inside the operator's network (SSRF). A host name may resolve to
several addresses and resolve differently a second later (DNS rebinding), so the guard
resolves once, refuses the URL if *any* address is not public, and the caller connects to
the checked address itself (never resolving the name again).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
from urllib.parse import urlsplit

SECRET_PREFIX = "whsec_"
EVENTS = ("job.succeeded", "job.failed", "job.cancelled")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedURL(ValueError):
    """The URL may not be called (scheme, host or an address that is not public)."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed by the secret's bytes
    (the base64 after ``whsec_``), as the Standard Webhooks specification has it."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


# IPv6 ranges that are never globally reachable (IANA's special-purpose registry) but that
# Python before 3.12.4 calls global. Ranges that stand for IPv4 addresses are not listed:
# ``embedded_ipv4`` decodes those, and the IPv4 address decides.
_NOT_GLOBAL_V6 = (
    ipaddress.IPv6Network("fec0::/10"),  # site-local (deprecated, still routed on some sites)
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # local-use NAT64: whatever the site maps it to
)
_WELL_KNOWN_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_ISATAP_IDS = (0x00005EFE, 0x02005EFE)


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses that ``address`` reaches through a translation or tunnel: mapped
    (``::ffff:a.b.c.d``), compatible (``::a.b.c.d``), translated (``::ffff:0:a.b.c.d``),
    NAT64 (``64:ff9b::a.b.c.d``), 6to4 (``2002:AABB:CCDD::``), Teredo (server and client)
    and ISATAP (``…:5efe:a.b.c.d``). A packet to such an address ends at the IPv4 one, so
    the IPv4 address is the one that must be public."""
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if any(address in net for net in (_IPV4_COMPATIBLE, _IPV4_TRANSLATED, _WELL_KNOWN_NAT64)):
        found.append(low32)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if (int(address) >> 32) & 0xFFFFFFFF in _ISATAP_IDS:
        found.append(low32)
    return found


def _is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner:
            return all(_is_public(v4) for v4 in inner)
        if any(address in net for net in _NOT_GLOBAL_V6) or address.is_site_local:
            return False
    return address.is_global and not address.is_multicast


def split_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL with a host; RefusedURL otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RefusedURL("the URL must start with http:// or https://")
    if not parts.hostname:
        raise RefusedURL("the URL has no host")
    if parts.username or parts.password:
        raise RefusedURL("the URL may not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise RefusedURL("the URL's port is not a number in 1..65535") from exc
    return parts.scheme, parts.hostname, port


def resolve_checked(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The addresses to connect to, in resolver order. Every address of ``host`` is checked;
    one that is not public (loopback, private, link-local, shared, reserved, multicast)
    refuses the URL."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise RefusedURL(f"cannot resolve {host!r}: {exc}") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise RefusedURL(f"{host!r} has no address")
    if not allow_private:
        for address in addresses:
            if not _is_public(address):
                raise RefusedURL(f"{host!r} resolves to {address}, which is not a public address")
    return list(dict.fromkeys(str(address) for address in addresses))


def check_url(url: str, *, allow_private: bool) -> list[str]:
    """Refuse a URL that cannot be delivered to; returns the checked addresses."""
    _, host, port = split_url(url)
    return resolve_checked(host, port, allow_private=allow_private)
