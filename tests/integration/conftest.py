"""Fixtures of the integration tests beside those of ``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from services.relay.translating import TranslatorProcess
from tests.relay_stores import translator_processes


@pytest.fixture(scope="session")
def translator_process() -> Iterator[Callable[..., TranslatorProcess]]:
    """``TranslatorProcess(settings, ...)`` for the relay's tests, its processes forked from a
    fork server that imported the application once (``tests/relay_stores.py``)."""
    with translator_processes() as make:
        yield make
