"""The Node.js checks fail, never skip, where node or npm is missing, and say what to install."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.node_packages import installed, node_and_npm


def test_without_node_and_npm_the_checks_fail_naming_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a PATH with neither node nor npm
    monkeypatch.setenv("PATH", str(tmp_path))
    # when a check looks for them, then it fails (an assertion, not a skip) saying why
    with pytest.raises(AssertionError, match=r"node and npm not on PATH.*apt-get install"):
        node_and_npm()
    with pytest.raises(AssertionError, match="not on PATH"):
        installed(Path(__file__).resolve().parents[1] / "asyncapi")
