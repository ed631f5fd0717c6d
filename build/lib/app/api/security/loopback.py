"""What counts as loopback: the addresses a server may bind to be reachable from this machine
only, and the ``Host`` names that can only mean this machine (a DNS name could be made to
point here by anyone: DNS rebinding)."""

from __future__ import annotations

import ipaddress

LOCALHOST = "localhost"


def is_ip_literal(hostname: str) -> bool:
    """True for an IPv4 or IPv6 address (without brackets), False for a name."""
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True


def is_loopback_name(hostname: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``; IPv6 without brackets)."""
    if hostname.lower() == LOCALHOST:
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def is_loopback_bind(host: str) -> bool:
    """Whether a server bound to ``host`` (``--host``, ``ORCHY_HOST``) is reachable from this
    machine only."""
    return is_loopback_name(host.strip("[]"))


def split_host(host: str) -> tuple[str, str]:
    """A ``Host`` header's hostname (lowercase, IPv6 without brackets) and port ('' if none)."""
    if host.startswith("["):
        hostname, _, rest = host[1:].partition("]")
        return hostname.lower(), rest[1:] if rest.startswith(":") else ""
    hostname, colon, port = host.rpartition(":")
    if colon and port.isdigit():
        return hostname.lower(), port
    return host.lower(), ""
