"""CBCM_NATS_URL naming one server or a cluster's nodes (issue #7)."""

from __future__ import annotations

from services.nats.client import nats_servers


def test_one_url_is_passed_to_the_client_as_it_is() -> None:
    assert nats_servers("nats://127.0.0.1:14222") == "nats://127.0.0.1:14222"
    assert nats_servers("tls://nats.example.org:4222") == "tls://nats.example.org:4222"


def test_several_comma_separated_urls_become_the_client_server_pool() -> None:
    assert nats_servers(
        "nats://127.0.0.1:14231, nats://127.0.0.1:14232,nats://127.0.0.1:14233"
    ) == [
        "nats://127.0.0.1:14231",
        "nats://127.0.0.1:14232",
        "nats://127.0.0.1:14233",
    ]


def test_a_stray_comma_leaves_one_url() -> None:
    assert nats_servers("nats://127.0.0.1:14231,") == "nats://127.0.0.1:14231"
