"""The SSRF guard decides before any connection: every spelling of a non-public address is refused."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from service.core.errors import Unprocessable
from service.core.webhooks.ssrf import (
    CheckedTarget,
    UnsafeWebhookURL,
    check_url,
    classify_ip,
    parse_legacy_ipv4,
)

pytestmark = pytest.mark.usefixtures("no_network")

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"

DNS = {
    "hooks.example.com": [PUBLIC_V4],
    "v6.example.com": [PUBLIC_V6],
    "dual.example.com": [PUBLIC_V4, PUBLIC_V6],
    "to-loopback.example.com": ["127.0.0.1"],
    "to-loopback6.example.com": ["::1"],
    "to-private.example.com": ["10.1.2.3"],
    "to-private172.example.com": ["172.20.0.5"],
    "to-private192.example.com": ["192.168.1.10"],
    "to-ula.example.com": ["fd12:3456::1"],
    "to-metadata.example.com": ["169.254.169.254"],
    "to-metadata6.example.com": ["fd00:ec2::254"],
    "to-alibaba.example.com": ["100.100.100.200"],
    "to-linklocal.example.com": ["169.254.10.20"],
    "to-linklocal6.example.com": ["fe80::1"],
    "to-cgnat.example.com": ["100.64.0.1"],
    "to-multicast.example.com": ["224.0.0.251"],
    "to-unspecified.example.com": ["0.0.0.0"],
    "to-mapped.example.com": ["::ffff:127.0.0.1"],
    # One good record is not enough: every answer must be public (DNS tricks).
    "mixed.example.com": [PUBLIC_V4, "127.0.0.1"],
    "mixed6.example.com": [PUBLIC_V6, "fd00:ec2::254"],
    "localhost": ["127.0.0.1", "::1"],
    "dev.localhost": ["127.0.0.1"],
    "metadata.google.internal": ["169.254.169.254"],
}

# (url, refusal code) — every row must be refused whatever loopback allows, except the
# loopback rows, which allow_loopback=True lets through (see ALLOWED_WITH_LOOPBACK).
REFUSED: list[tuple[str, str]] = [
    # loopback, in every encoding
    ("http://127.0.0.1/hook", "loopback_address"),
    ("http://127.1/hook", "loopback_address"),
    ("http://127.0.1/hook", "loopback_address"),
    ("http://2130706433/hook", "loopback_address"),
    ("http://0x7f000001/hook", "loopback_address"),
    ("http://0x7F.0x0.0x0.0x1/hook", "loopback_address"),
    ("http://0177.0.0.1/hook", "loopback_address"),
    ("http://0177.1/hook", "loopback_address"),
    ("http://017700000001/hook", "loopback_address"),
    ("http://0x7f.1/hook", "loopback_address"),
    ("http://0x7f.0.0.01/hook", "loopback_address"),
    ("http://127.000.000.001/hook", "loopback_address"),
    ("http://127.0.0.1./hook", "loopback_address"),
    ("http://127.255.255.254:8080/hook", "loopback_address"),
    ("http://127.0.0.1#@hooks.example.com/", "loopback_address"),  # the host is 127.0.0.1
    ("http://[::1]/hook", "loopback_address"),
    ("http://[0:0:0:0:0:0:0:1]/hook", "loopback_address"),
    ("http://localhost/hook", "loopback_address"),
    ("http://LOCALHOST:9000/hook", "loopback_address"),
    ("http://dev.localhost/hook", "loopback_address"),
    ("http://to-loopback.example.com/hook", "loopback_address"),
    ("http://to-loopback6.example.com/hook", "loopback_address"),
    # private
    ("http://10.0.0.1/", "private_address"),
    ("http://10.255.255.255/", "private_address"),
    ("http://167772161/", "private_address"),  # 10.0.0.1 as decimal
    ("http://0xa000001/", "private_address"),
    ("http://012.0.0.1/", "private_address"),
    ("http://10.1/", "private_address"),
    ("http://172.16.0.1/", "private_address"),
    ("http://172.31.255.254/", "private_address"),
    ("http://192.168.0.1/", "private_address"),
    ("http://0xc0.0xa8.1.1/", "private_address"),
    ("http://[fc00::1]/", "private_address"),
    ("http://[fd12:3456:789a::1]/", "private_address"),
    ("http://to-private.example.com/", "private_address"),
    ("http://to-private172.example.com/", "private_address"),
    ("http://to-private192.example.com/", "private_address"),
    ("http://to-ula.example.com/", "private_address"),
    # cloud metadata
    ("http://169.254.169.254/latest/meta-data/", "metadata_address"),
    ("http://2852039166/latest/meta-data/", "metadata_address"),
    ("http://0xa9fea9fe/", "metadata_address"),
    ("http://0251.0376.0251.0376/", "metadata_address"),
    ("http://169.254.43518/", "metadata_address"),
    ("http://[::ffff:169.254.169.254]/", "metadata_address"),
    ("http://[::ffff:a9fe:a9fe]/", "metadata_address"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "metadata_address"),
    ("http://100.100.100.200/latest/meta-data/", "metadata_address"),
    ("http://169.254.170.2/v2/credentials", "metadata_address"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata_address"),
    ("http://metadata/computeMetadata/v1/", "metadata_address"),
    ("http://to-metadata.example.com/", "metadata_address"),
    ("http://to-metadata6.example.com/", "metadata_address"),
    ("http://to-alibaba.example.com/", "metadata_address"),
    # link-local
    ("http://169.254.1.1/", "link_local_address"),
    ("http://[fe80::1]/", "link_local_address"),
    ("http://[fe80::1%25eth0]/", "link_local_address"),
    ("http://to-linklocal.example.com/", "link_local_address"),
    ("http://to-linklocal6.example.com/", "link_local_address"),
    # carrier-grade NAT
    ("http://100.64.0.1/", "shared_address"),
    ("http://100.127.255.254/", "shared_address"),
    ("http://to-cgnat.example.com/", "shared_address"),
    # multicast
    ("http://224.0.0.1/", "multicast_address"),
    ("http://239.255.255.250:1900/", "multicast_address"),
    ("http://[ff02::1]/", "multicast_address"),
    ("http://to-multicast.example.com/", "multicast_address"),
    # unspecified
    ("http://0.0.0.0/", "unspecified_address"),
    ("http://0/", "unspecified_address"),
    ("http://0x0/", "unspecified_address"),
    ("http://[::]/", "unspecified_address"),
    ("http://to-unspecified.example.com/", "unspecified_address"),
    # broadcast and reserved
    ("http://255.255.255.255/", "broadcast_address"),
    ("http://4294967295/", "broadcast_address"),
    ("http://240.0.0.1/", "reserved_address"),
    ("http://192.0.2.1/", "reserved_address"),
    ("http://198.18.0.1/", "reserved_address"),
    ("http://[2001:db8::1]/", "reserved_address"),
    ("http://[100::1]/", "reserved_address"),
    # IPv4 inside IPv6
    ("http://[::ffff:127.0.0.1]/", "loopback_address"),
    ("http://[::ffff:7f00:1]/", "loopback_address"),
    ("http://[0:0:0:0:0:ffff:127.0.0.1]/", "loopback_address"),
    ("http://[::ffff:10.0.0.1]/", "private_address"),
    ("http://[::127.0.0.1]/", "loopback_address"),  # IPv4-compatible (deprecated)
    ("http://[::ffff:8.8.8.8]/", "embedded_ipv4_address"),
    ("http://[64:ff9b::7f00:1]/", "loopback_address"),  # NAT64 of 127.0.0.1
    ("http://[64:ff9b::a9fe:a9fe]/", "metadata_address"),  # NAT64 of 169.254.169.254
    ("http://[64:ff9b:1::a00:1]/", "private_address"),  # local-use NAT64
    ("http://[2002:7f00:1::]/", "loopback_address"),  # 6to4 of 127.0.0.1
    ("http://[2002:a9fe:a9fe::]/", "metadata_address"),  # 6to4 of 169.254.169.254
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "loopback_address"),  # Teredo of 127.0.0.1
    ("http://to-mapped.example.com/", "loopback_address"),
    # DNS answers with one public and one refused address
    ("http://mixed.example.com/", "loopback_address"),
    ("http://mixed6.example.com/", "metadata_address"),
]

MALFORMED: list[tuple[str, str]] = [
    ("", "invalid_url"),
    ("ftp://hooks.example.com/", "unsupported_scheme"),
    ("file:///etc/passwd", "unsupported_scheme"),
    ("gopher://127.0.0.1:6379/_INFO", "unsupported_scheme"),
    ("javascript:alert(1)", "unsupported_scheme"),
    ("hooks.example.com/hook", "unsupported_scheme"),
    ("http:///hook", "invalid_host"),
    ("http://", "invalid_host"),
    ("http://user:pass@hooks.example.com/", "credentials_in_url"),
    ("http://hooks.example.com@127.0.0.1/", "credentials_in_url"),
    ("http://hooks.example.com\\@127.0.0.1/", "invalid_url"),
    ("http://hooks.example.com /", "invalid_url"),
    ("http://hooks.example.com\n.evil/", "invalid_url"),
    ("http://hooks.example.com:0/", "invalid_port"),
    ("http://hooks.example.com:65536/", "invalid_port"),
    ("http://hooks.example.com:80x/", "invalid_port"),
    ("http://hooks.example.com:/", "invalid_port"),
    ("http://256.0.0.1/", "invalid_host"),
    ("http://1.2.3.4.5/", "invalid_host"),
    ("http://0x100000000/", "invalid_host"),
    ("http://08.0.0.1/", "invalid_host"),  # not octal, not decimal: inet_aton refuses too
    ("http://%31%32%37.0.0.1/", "invalid_host"),
    ("http://１２７.0.0.1/", "invalid_host"),
    ("http://[::1/", "invalid_url"),
    ("http://[127.0.0.1]/", "invalid_url"),
    ("http://bad_label-.example.com/", "invalid_host"),
    ("http://a..b/", "invalid_host"),
    ("http://nx.example.com/", "unresolvable_host"),
    ("http://" + "a" * 2100 + ".com/", "invalid_url"),
]


def check(url: str, *, allow_loopback: bool = False) -> CheckedTarget:
    return check_url(url, allow_loopback=allow_loopback, resolver=fake_dns)


def fake_dns(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
    if host not in DNS:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return [
        (
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0))
            if ":" in ip
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
        )
        for ip in DNS[host]
    ]


@pytest.mark.parametrize(("url", "code"), REFUSED + MALFORMED)
def test_refused(url: str, code: str) -> None:
    with pytest.raises(UnsafeWebhookURL) as info:
        check(url)
    assert info.value.code == code, info.value.message
    assert info.value.message.startswith("webhook URL refused: ")


ALLOWED_WITH_LOOPBACK = {url for url, code in REFUSED if code == "loopback_address" and "ffff" not in url} - {
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[2002:7f00:1::]/",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
    "http://to-mapped.example.com/",
}


@pytest.mark.parametrize(("url", "code"), REFUSED + MALFORMED)
def test_allow_loopback_only_lifts_plain_loopback(url: str, code: str) -> None:
    if url in ALLOWED_WITH_LOOPBACK:
        target = check(url, allow_loopback=True)
        assert any(ipaddress.ip_address(ip).is_loopback for ip in target.addresses)
        return
    with pytest.raises(UnsafeWebhookURL) as info:
        check(url, allow_loopback=True)
    assert info.value.code == code, info.value.message


def test_allow_loopback_permits_127_but_not_private_or_metadata() -> None:
    assert check("http://127.0.0.1:8080/hook", allow_loopback=True).ip == "127.0.0.1"
    assert check("http://localhost:8080/hook", allow_loopback=True).ip == "127.0.0.1"
    for url in ("http://10.0.0.8/", "http://169.254.169.254/", "http://[::ffff:127.0.0.1]/"):
        with pytest.raises(UnsafeWebhookURL):
            check(url, allow_loopback=True)


@pytest.mark.parametrize(
    ("url", "host", "port", "ip", "target"),
    [
        ("https://hooks.example.com/hook?x=1", "hooks.example.com", 443, PUBLIC_V4, "/hook?x=1"),
        ("http://HOOKS.Example.COM:8080", "hooks.example.com", 8080, PUBLIC_V4, "/"),
        ("https://hooks.example.com./a#frag", "hooks.example.com", 443, PUBLIC_V4, "/a"),
        ("https://v6.example.com/", "v6.example.com", 443, PUBLIC_V6, "/"),
        ("https://dual.example.com/", "dual.example.com", 443, PUBLIC_V4, "/"),
        ("http://93.184.215.14/", PUBLIC_V4, 80, PUBLIC_V4, "/"),
        ("http://1572394766/", PUBLIC_V4, 80, PUBLIC_V4, "/"),  # decimal of a public address
        (f"https://[{PUBLIC_V6}]:8443/h", PUBLIC_V6, 8443, PUBLIC_V6, "/h"),
        ("http://[64:ff9b::5db8:d70e]/", "64:ff9b::5db8:d70e", 80, "64:ff9b::5db8:d70e", "/"),
    ],
)
def test_allowed(url: str, host: str, port: int, ip: str, target: str) -> None:
    checked = check(url)
    assert (checked.host, checked.port, checked.ip, checked.target) == (host, port, ip, target)
    assert checked.url == url


def test_checked_target_pins_ip_and_keeps_host() -> None:
    checked = check("https://dual.example.com:8443/hook?x=1")
    assert checked.addresses == (PUBLIC_V4, PUBLIC_V6)
    assert checked.connect_url() == f"https://{PUBLIC_V4}:8443/hook?x=1"
    assert checked.host_header() == "dual.example.com:8443"
    v6 = check(f"https://[{PUBLIC_V6}]/")
    assert v6.connect_url() == f"https://[{PUBLIC_V6}]:443/"
    assert v6.host_header() == f"[{PUBLIC_V6}]"
    assert v6.host_is_ip and not checked.host_is_ip


def test_error_is_a_422_naming_the_reason() -> None:
    with pytest.raises(UnsafeWebhookURL) as info:
        check("http://0x7f000001/hook")
    err = info.value
    assert isinstance(err, Unprocessable)
    assert err.status == 422
    assert err.param == "webhook.url"
    assert "0x7f000001 (127.0.0.1) is a loopback address" in err.message
    assert err.envelope()["error"]["code"] == "loopback_address"


def test_resolver_failure_is_refused() -> None:
    def broken(*args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        raise OSError("resolver down")

    with pytest.raises(UnsafeWebhookURL) as info:
        check_url("https://hooks.example.com/", allow_loopback=False, resolver=broken)
    assert info.value.code == "unresolvable_host"


def test_literal_addresses_never_reach_the_resolver() -> None:
    calls: list[str] = []

    def spy(host: str, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        calls.append(host)
        return fake_dns(host, *args, **kwargs)

    check_url("http://93.184.215.14/", allow_loopback=False, resolver=spy)
    with pytest.raises(UnsafeWebhookURL):
        check_url("http://2130706433/", allow_loopback=False, resolver=spy)
    assert calls == []


@pytest.mark.parametrize(
    ("spelling", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.0.0.0x1", "127.0.0.1"),
        ("1.0x10000", "1.1.0.0"),
        ("0", "0.0.0.0"),
        ("0xffffffff", "255.255.255.255"),
        ("256.1", None),
        ("1.2.3.256", None),
        ("1.2.65536", None),
        ("09", None),
        ("example.com", None),
        ("1.2.3.4.5", None),
        ("", None),
    ],
)
def test_legacy_ipv4_parser_matches_inet_aton(spelling: str, address: str | None) -> None:
    parsed = parse_legacy_ipv4(spelling)
    assert (str(parsed) if parsed else None) == address
    # The C library's inet_aton (what getaddrinfo falls back to) agrees; it does no lookup.
    try:
        packed: bytes | None = socket.inet_aton(spelling)
    except OSError:
        packed = None
    if spelling:
        assert packed == (parsed.packed if parsed else None)


def test_classify_public_addresses() -> None:
    for ip in (PUBLIC_V4, PUBLIC_V6, "8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"):
        assert classify_ip(ipaddress.ip_address(ip)) is None, ip
