"""The webhook guard against IPv6 spellings of private IPv4 addresses.

The audit registered endpoints at NAT64 (``64:ff9b::/96``, ``64:ff9b:1::/48``), 6to4
(``2002::/16``), IPv4-compatible (``::a.b.c.d``) and site-local (``fec0::/10``) forms of
private addresses, and all were accepted. The guard decodes the IPv4 address an IPv6 one
stands for and judges that.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from core.webhooks import RefusedURL, check_url, embedded_ipv4

PRIVATE_FORMS = [
    "::ffff:10.0.0.1",  # IPv4-mapped
    "::ffff:0:192.168.1.1",  # IPv4-translated (SIIT)
    "::127.0.0.1",  # IPv4-compatible
    "::169.254.169.254",
    "64:ff9b::10.0.0.1",  # well-known NAT64
    "64:ff9b::127.0.0.1",
    "64:ff9b:1::a00:1",  # local-use NAT64
    "64:ff9b:1:a00:1::",
    "2002:c0a8:0101::1",  # 6to4 of 192.168.1.1
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of the metadata service
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo, client 192.0.2.45
    "2001:0:a00:1::",  # Teredo, server 10.0.0.1
    "2001:4860::5efe:10.0.0.1",  # ISATAP
    "fec0::1",  # site-local
    "fec0:0:0:ffff::1",
    "::",
    "::1",
]

PUBLIC_FORMS = ["::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1", "2001:4860:4860::8888"]


@pytest.mark.parametrize("address", PRIVATE_FORMS)
def test_ipv6_forms_of_private_addresses_are_refused(address: str) -> None:
    with pytest.raises(RefusedURL, match="not a public address"):
        check_url(f"http://[{address}]:8080/hook", allow_private=False)


@pytest.mark.parametrize("address", PUBLIC_FORMS)
def test_ipv6_forms_of_public_addresses_pass(address: str) -> None:
    assert check_url(f"https://[{address}]/hook", allow_private=False)


def test_the_ipv4_address_is_decoded_from_each_form() -> None:
    def inner(text: str) -> list[str]:
        return [str(a) for a in embedded_ipv4(ipaddress.IPv6Address(text))]

    assert inner("64:ff9b::10.1.2.3") == ["10.1.2.3"]
    assert inner("2002:0a01:0203::") == ["10.1.2.3"]
    assert inner("::10.1.2.3") == ["10.1.2.3"]
    assert inner("2001:0:4136:e378:8000:63bf:3fff:fdd2") == ["65.54.227.120", "192.0.2.45"]
    assert inner("2001:db8::1") == []


@pytest.fixture
def private_refused(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from core.settings import get_settings

    monkeypatch.setenv("STILLHOUSE_WEBHOOK_ALLOW_PRIVATE", "false")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def test_registering_a_nat64_private_endpoint_is_422(
    client: TestClient, private_refused: None
) -> None:
    for address in ("64:ff9b::a9fe:a9fe", "2002:a00:1::", "fec0::1", "::a00:1"):
        resp = client.post(
            "/v1/webhooks", json={"url": f"http://[{address}]/hook", "events": ["job.failed"]}
        )
        assert resp.status_code == 422, resp.text
        assert "not a public address" in resp.json()["detail"]
