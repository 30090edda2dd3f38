"""A store walked through the application once per module, copied for each test.

The audit tests that damage a store (``test_audit_chain``, ``test_audit_verify_paths``) and
read its tree (``test_audit_tree``) each need the same demo walk of many cases, on SQLite and
on PostgreSQL. Walking it for every test was most of their CPU (a walk of 12 to 40 cases
costs 0.2 to 0.8 s of the test process, more of PostgreSQL's). Here the walk is made once per
module and store, by the application, into a template that no test touches
(``tests/store_templates.py``); each test gets a copy of its own and opens the application
on it, as ``cbcm audit verify`` and every process after the first do. What these tests look
at (the stored events, links, marks and tiles, read through the recorder) is the same bytes
either way.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from services.application.mechanism import ComplaintMechanism
from services.bootstrap import complaint_mechanism
from services.demo.walk import build_demo_network, walk_cases
from services.settings import Settings
from tests.store_templates import StoreTemplate, store_template

Template = StoreTemplate[Any]
"""A walked store no test writes to (``tests/store_templates.py``)."""


@contextmanager
def make_template(
    kind: str, root: Path, server: str | None, walk: Callable[[ComplaintMechanism], Any]
) -> Iterator[Template]:
    """A store of ``kind`` walked by ``walk`` through the application, closed; removed after."""
    with store_template(kind, root, server, walk) as made:
        yield made


def sqlite_template_fixture(walk: Callable[[ComplaintMechanism], Any], name: str) -> Any:
    """A module's fixture of one SQLite store walked by ``walk``, for tests of SQLite alone."""

    @pytest.fixture(scope="module")
    def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Template]:
        with make_template("sqlite", tmp_path_factory.mktemp(name), None, walk) as made:
            yield made

    return sqlite_template


@contextmanager
def copy_of(template: Template, root: Path) -> Iterator[Settings]:
    """Settings naming a copy of ``template``'s store and data directory under ``root``."""
    with template.copy(root / "data") as url:
        yield Settings(data_dir=root / "data", event_store=url)


@contextmanager
def opened_copy(template: Template, root: Path) -> Iterator[ComplaintMechanism]:
    """The application on a fresh copy of ``template``'s store under ``root``, closed after."""
    with copy_of(template, root) as settings:
        app = complaint_mechanism(settings)
        try:
            yield app
        finally:
            app.close()


def demo_walk(cases: int, seed: int, start: datetime) -> Callable[[ComplaintMechanism], None]:
    """The demo network, then ``cases`` cases walked with ``random.Random(seed)``."""

    def walk(app: ComplaintMechanism) -> None:
        build_demo_network(app, start)
        walk_cases(app, cases, random.Random(seed), start)

    return walk


def walked_store_fixtures(walk: Callable[[ComplaintMechanism], Any]) -> tuple[Any, Any]:
    """A module's ``template`` fixture (once per store, SQLite then PostgreSQL) and its
    ``store`` fixture (an application on a fresh copy of it, for each test)."""

    @pytest.fixture(scope="module", params=["sqlite", "postgres"])
    def template(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[Template]:
        server = None
        if request.param == "postgres":
            server = request.getfixturevalue("postgres_server_url")
        root = tmp_path_factory.mktemp(f"template-{request.param}")
        with make_template(request.param, root, server, walk) as made:
            yield made

    @pytest.fixture
    def store(template: Template, tmp_path: Path) -> Iterator[ComplaintMechanism]:
        with opened_copy(template, tmp_path) as app:
            yield app

    return template, store
