"""Real Chromium for the public pages (issue #20): Debian's ``chromium`` driven by
Playwright, never a browser Playwright downloads. Missing pieces are installed, never
skipped: ``apt-get install -y chromium`` (CI runs as root) and ``npm ci`` here for axe-core.
One browser per test session; the app on a real uvicorn server on loopback.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.sync_api import Browser, Locator, Page, Playwright, sync_playwright

from services.api.serving import server_config
from services.bootstrap import complaint_mechanism
from services.nats.server import free_port
from services.settings import Settings
from tests.api_world import World, make_world

CHROMIUM = Path("/usr/bin/chromium")
HERE = Path(__file__).parent
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def installing() -> Iterator[None]:
    """One installer at a time across pytest-xdist workers."""
    with (HERE / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        pytest.fail(f"{what} failed ({done.returncode}): {done.stderr[-2000:]}")


def ensure_chromium() -> Path:
    with installing():
        if not CHROMIUM.exists():
            if os.geteuid() != 0 or shutil.which("apt-get") is None:
                pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (as root)")
            _run(["apt-get", "update", "-qq"], "apt-get update")
            _run(["apt-get", "install", "-y", "-qq", "chromium"], "apt-get install chromium")
    return CHROMIUM


def ensure_axe() -> str:
    with installing():
        if not AXE.exists():
            npm = shutil.which("npm")
            if npm is None:
                pytest.fail("npm is missing: it installs axe-core for the accessibility checks")
            _run([npm, "ci", "--ignore-scripts", "--no-audit", "--prefix", str(HERE)], "npm ci")
    return AXE.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def axe_source() -> str:
    return ensure_axe()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Per module, not per session: Playwright's sync API keeps an event loop running in this
    thread while it is open, and every asyncio test the same xdist worker ran after it failed
    ("asyncio.run() cannot be called from a running event loop")."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    executable = ensure_chromium()
    browser = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@contextmanager
def served(app: FastAPI) -> Iterator[tuple[str, int]]:
    """``app`` on a real uvicorn server on loopback, configured as ``cbcm api`` does (the
    browser's idle keep-alive connections are not waited for at the end)."""
    port = free_port()
    config = server_config(app, "127.0.0.1", port)
    config.timeout_graceful_shutdown = 1
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, str]]:
    """The API with its pages on a real server; the network's form goes to unhcr."""
    data = tmp_path_factory.mktemp("browser")
    mechanism = complaint_mechanism(
        Settings(data_dir=data, event_store=f"sqlite:///{data / 'events.sqlite3'}")
    )
    world = make_world(data, mechanism, public_pages_agency="unhcr")
    with served(world.api) as (host, port):
        yield world, f"http://{host}:{port}"
    mechanism.close()


def follow(page: Page, target: Locator) -> None:
    """Clicks a link or a form's button and waits until the page it leads to has loaded.
    A bare ``click()`` returns once the navigation has started: a check made then may read
    a page that has not arrived yet (a status line not yet parsed)."""
    with page.expect_navigation():
        target.click()
