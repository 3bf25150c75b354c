"""SSRF guard for webhook URLs: parse strictly, resolve, and refuse non-public addresses."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from service.core.errors import Unprocessable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# socket.getaddrinfo's shape; tests inject a fake so that no decision test touches DNS.
Resolver = Callable[..., Sequence[tuple[Any, ...]]]

MAX_URL_LENGTH = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}


class UnsafeWebhookURL(Unprocessable):
    """422: the webhook URL is malformed or points at an address Tuneline must not call."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, code=code, param="webhook.url")


@dataclass(frozen=True, slots=True)
class CheckedTarget:
    """A webhook URL that passed the guard, pinned to the address that was checked."""

    url: str
    scheme: str
    host: str  # ASCII host name, or the canonical form of an IP literal (no brackets)
    port: int
    ip: str  # the checked address to connect to; never re-resolved
    target: str  # path and query sent on the request line
    addresses: tuple[str, ...] = ()  # every address the name resolved to (all checked)

    @property
    def host_is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == _DEFAULT_PORTS[self.scheme]:
            return host
        return f"{host}:{self.port}"

    def connect_url(self) -> str:
        """The URL with the checked IP in place of the host, so nothing resolves it again."""
        ip = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{self.scheme}://{ip}:{self.port}{self.target}"


def _nets(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Exact cloud metadata / link-local service endpoints, named so the message is explicit.
_METADATA_IPS = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle, ...
        "169.254.169.253",  # AWS VPC DNS
        "169.254.169.123",  # AWS time sync
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.170.23",  # AWS EKS pod identity
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::253",  # AWS VPC DNS over IPv6
        "fd00:ec2::123",  # AWS time sync over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity over IPv6
        "fd20:ce::254",  # GCP metadata over IPv6
    )
)
_METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
    }
)

# Order matters: the first match names the reason.
_V4_RULES: tuple[tuple[str, str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]], ...] = (
    ("unspecified_address", "an unspecified ('this network') address", _nets("0.0.0.0/8")),
    ("loopback_address", "a loopback address", _nets("127.0.0.0/8")),
    (
        "private_address",
        "a private (RFC 1918) address",
        _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"),
    ),
    ("shared_address", "a carrier-grade NAT (RFC 6598) address", _nets("100.64.0.0/10")),
    ("link_local_address", "a link-local address", _nets("169.254.0.0/16")),
    ("multicast_address", "a multicast address", _nets("224.0.0.0/4")),
    ("broadcast_address", "the broadcast address", _nets("255.255.255.255/32")),
    (
        "reserved_address",
        "a reserved, documentation or benchmarking address",
        _nets(
            "192.0.0.0/24",
            "192.0.2.0/24",
            "192.88.99.0/24",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "240.0.0.0/4",
        ),
    ),
)
_V6_RULES: tuple[tuple[str, str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]], ...] = (
    ("unspecified_address", "the unspecified address", _nets("::/128")),
    ("loopback_address", "a loopback address", _nets("::1/128")),
    ("private_address", "a unique local (fc00::/7) address", _nets("fc00::/7")),
    ("link_local_address", "a link-local address", _nets("fe80::/10", "fec0::/10")),
    ("multicast_address", "a multicast address", _nets("ff00::/8")),
    (
        "private_address",
        "a local-use NAT64 (64:ff9b:1::/48) address",
        _nets("64:ff9b:1::/48"),
    ),
    (
        "reserved_address",
        "a reserved, documentation or non-global address",
        _nets("100::/64", "2001:db8::/32", "3fff::/20", "2001:10::/28", "2001:20::/28", "5f00::/16"),
    ),
)
_V6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_NAT64_WKP = ipaddress.ip_network("64:ff9b::/96")
_TEREDO = ipaddress.ip_network("2001::/32")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")


def classify_ip(ip: IPAddress) -> tuple[str, str] | None:
    """Return ``(code, description)`` when ``ip`` must not be called, else None."""
    if ip in _METADATA_IPS:
        return "metadata_address", "a cloud metadata endpoint"
    if isinstance(ip, ipaddress.IPv4Address):
        for code, what, nets in _V4_RULES:
            if any(ip in n for n in nets):
                return code, what
        if not ip.is_global:  # backstop for anything IANA marks not globally reachable
            return "reserved_address", "a non-global address"
        return None
    if ip.scope_id:
        return "link_local_address", "a scoped (zone id) address"
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        kind, v4 = embedded
        inner = classify_ip(v4)
        if inner is not None:
            return inner[0], f"{kind} of {v4}, {inner[1]}"
        if kind != "a NAT64 address":  # only NAT64 has a legitimate use for public targets
            return "embedded_ipv4_address", f"{kind} of {v4}; use the IPv4 address itself"
        return None
    for code, what, nets in _V6_RULES:
        if any(ip in n for n in nets):
            return code, what
    if ip not in _V6_GLOBAL_UNICAST or not ip.is_global:
        return "reserved_address", "a reserved or non-global address"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if ip.ipv4_mapped is not None:
        return "an IPv4-mapped IPv6 address", ip.ipv4_mapped
    if ip in _V4_COMPATIBLE and int(ip) > 1:  # :: and ::1 are handled by the plain rules
        return "an IPv4-compatible IPv6 address", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64_WKP:
        return "a NAT64 address", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _SIX_TO_FOUR and ip.sixtofour is not None:
        return "a 6to4 address", ip.sixtofour
    if ip in _TEREDO and ip.teredo is not None:
        return "a Teredo address", ip.teredo[1]
    return None


_NUMERIC_PART = re.compile(r"^(?:0[xX][0-9a-fA-F]*|[0-9]+)$")


def _ends_in_number(host: str) -> bool:
    """WHATWG URL rule: a host whose last label is numeric must be an IPv4 address."""
    labels = host.split(".")
    if labels and labels[-1] == "" and len(labels) > 1:
        labels.pop()
    return bool(labels) and bool(_NUMERIC_PART.match(labels[-1]))


def parse_legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Parse every IPv4 spelling ``inet_aton`` accepts (``127.1``, ``0x7f.1``, ``0177.0.0.1``,
    ``2130706433``); None when ``host`` is not such a spelling or is out of range."""
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # one trailing dot, as resolvers accept
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        if not _NUMERIC_PART.match(part):
            return None
        if part[:2].lower() == "0x":
            value = int(part[2:] or "0", 16)
        elif len(part) > 1 and part.startswith("0"):
            if not all(c in "01234567" for c in part):
                return None
            value = int(part, 8)
        else:
            value = int(part, 10)
        values.append(value)
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = last
    for i, v in enumerate(head):
        number += v << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def _refuse(code: str, message: str) -> UnsafeWebhookURL:
    return UnsafeWebhookURL(f"webhook URL refused: {message}", code)


def _check_address(ip: IPAddress, *, allow_loopback: bool, shown: str) -> None:
    verdict = classify_ip(ip)
    if verdict is None:
        return
    code, what = verdict
    if code == "loopback_address" and allow_loopback and not _is_embedded(ip):
        return
    where = shown if shown == str(ip) else f"{shown} ({ip})"
    raise _refuse(code, f"{where} is {what}")


def _is_embedded(ip: IPAddress) -> bool:
    return isinstance(ip, ipaddress.IPv6Address) and _embedded_ipv4(ip) is not None


def _parse_url(url: str) -> tuple[str, str, int, str, str]:
    """Return (scheme, raw host, port, target, netloc) or raise UnsafeWebhookURL."""
    if not isinstance(url, str) or not url:
        raise _refuse("invalid_url", "the URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise _refuse("invalid_url", f"the URL is longer than {MAX_URL_LENGTH} characters")
    # Parsers disagree on these (urllib vs. browsers vs. httpx), so refuse rather than guess.
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url) or "\\" in url:
        raise _refuse("invalid_url", "the URL contains whitespace, control characters or '\\'")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _refuse("invalid_url", f"the URL cannot be parsed ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise _refuse("unsupported_scheme", "only http and https URLs are allowed")
    if "@" in parts.netloc:
        raise _refuse("credentials_in_url", "URLs with user information ('user@host') are not allowed")
    host = parts.hostname
    if not host:
        raise _refuse("invalid_host", "the URL has no host")
    try:
        port = parts.port
    except ValueError:
        raise _refuse("invalid_port", "the URL's port is not a number between 1 and 65535") from None
    if port is None:
        if parts.netloc.endswith(":"):
            raise _refuse("invalid_port", "the URL has an empty port")
        port = _DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65535:
        raise _refuse("invalid_port", "the URL's port is not a number between 1 and 65535")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return scheme, host, port, target, parts.netloc


def _normalise_name(host: str) -> str:
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise _refuse("invalid_host", f"{host!r} is not a valid host name") from None
    ascii_host = ascii_host.lower().rstrip(".")
    if not ascii_host or len(ascii_host) > 253:
        raise _refuse("invalid_host", f"{host!r} is not a valid host name")
    for label in ascii_host.split("."):
        if not re.fullmatch(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?", label):
            raise _refuse("invalid_host", f"{host!r} is not a valid host name")
    return ascii_host


def check_url(
    url: str,
    *,
    allow_loopback: bool,
    resolver: Resolver = socket.getaddrinfo,
) -> CheckedTarget:
    """Validate ``url`` and resolve its host; refuse it when any address is not public.

    Loopback is allowed only with ``allow_loopback`` (development and tests); every other class
    stays refused. The returned target carries the checked IP, which the sender connects to.
    """
    scheme, raw_host, port, target, netloc = _parse_url(url)

    literal: IPAddress | None = None
    if netloc.startswith("["):
        if "%" in raw_host:
            raise _refuse("link_local_address", f"{raw_host} has a zone id (scoped address)")
        try:
            literal = ipaddress.IPv6Address(raw_host)
        except ValueError:
            raise _refuse("invalid_host", f"[{raw_host}] is not a valid IPv6 address") from None
    elif _ends_in_number(raw_host):
        literal = parse_legacy_ipv4(raw_host)
        if literal is None:
            raise _refuse("invalid_host", f"{raw_host!r} is not a valid IPv4 address")

    if literal is not None:
        _check_address(literal, allow_loopback=allow_loopback, shown=raw_host)
        return CheckedTarget(
            url=url,
            scheme=scheme,
            host=str(literal),
            port=port,
            ip=str(literal),
            target=target,
            addresses=(str(literal),),
        )

    host = _normalise_name(raw_host)
    if host in _METADATA_NAMES:
        raise _refuse("metadata_address", f"{host} is a cloud metadata host name")
    if (host == "localhost" or host.endswith(".localhost")) and not allow_loopback:
        raise _refuse("loopback_address", f"{host} is a loopback host name")

    try:
        infos = resolver(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise _refuse("unresolvable_host", f"{host} does not resolve ({exc})") from None
    addresses: list[IPAddress] = []
    for info in infos:
        sockaddr = info[4]
        raw_ip = str(sockaddr[0])
        try:
            ip = ipaddress.ip_address(raw_ip)
        except ValueError:
            raise _refuse("unresolvable_host", f"{host} resolved to {raw_ip!r}") from None
        if isinstance(ip, ipaddress.IPv6Address) and len(sockaddr) >= 4 and sockaddr[3]:
            raise _refuse("link_local_address", f"{host} resolves to a scoped address {ip}")
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise _refuse("unresolvable_host", f"{host} does not resolve to any address")
    # Any refused address refuses the URL: otherwise a name with one public and one private
    # record (or a rebinding resolver) could steer the connection inward.
    for ip in addresses:
        _check_address(ip, allow_loopback=allow_loopback, shown=host)
    return CheckedTarget(
        url=url,
        scheme=scheme,
        host=host,
        port=port,
        ip=str(addresses[0]),
        target=target,
        addresses=tuple(str(a) for a in addresses),
    )
