"""Fixtures of the integration tests beside those of ``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from nacl.public import PrivateKey

from services.relay.translating import TranslatorProcess
from tests.relay_stores import translator_processes
from tests.store_templates import StoreTemplate, store_template


@pytest.fixture(scope="session")
def translator_process() -> Iterator[Callable[..., TranslatorProcess]]:
    """``TranslatorProcess(settings, ...)`` for the relay's tests, its processes forked from a
    fork server that imported the application once (``tests/relay_stores.py``)."""
    with translator_processes() as make:
        yield make


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def demo_template(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StoreTemplate[dict[str, PrivateKey]]]:
    """The demo's store of ``test_relay_messages.py`` (``demo_store``: cases, erasures, share
    keys), written once per test process on each store, for the relay's tests to copy
    (``StoreTemplate.copy``); the share keys' private halves."""
    from tests.integration.test_relay_messages import demo_store  # noqa: PLC0415

    server = None if request.param == "sqlite" else request.getfixturevalue("postgres_server_url")
    folder = tmp_path_factory.mktemp(f"demo-{request.param}")
    with store_template(request.param, folder, server, demo_store) as template:
        yield template
