"""``cbcm webhooks``: the coordinator's endpoints from the command line (issue #19), in-process
through the CLI's own entry (typer's runner), on a real store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.bootstrap import complaint_mechanism
from services.cli.main import cli
from services.settings import Settings
from tests.world import establish

RECEIVED = "org.psea.cbcm.case.received.v1"
AS_COORDINATOR = ["--user", "coord-1", "--as-agency", "ocha"]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    store = f"sqlite:///{tmp_path / 'events.sqlite3'}"
    app = complaint_mechanism(Settings(data_dir=tmp_path, event_store=store))
    establish(app, datetime.now(UTC) - timedelta(days=1))
    app.close()
    monkeypatch.setenv("CBCM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CBCM_EVENT_STORE", store)
    return tmp_path


def test_the_coordinator_registers_lists_disables_and_removes_an_endpoint(env: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(
        cli,
        [
            "webhooks",
            "register",
            "--agency",
            "wfp",
            "--url",
            "https://cfm.wfp.example/hook",
            "--type",
            RECEIVED,
            *AS_COORDINATOR,
        ],
    )
    assert made.exit_code == 0, made.output
    answer = json.loads(made.output)
    assert answer["secret"].startswith("whsec_")  # made here, printed once
    endpoint = answer["endpoint_id"]

    listed = runner.invoke(cli, ["webhooks", "list", "--json"])
    (row,) = json.loads(listed.output)
    assert row["endpoint_id"] == endpoint and row["agency"] == "wfp" and row["enabled"]
    assert answer["secret"] not in listed.output

    assert runner.invoke(cli, ["webhooks", "disable", endpoint, *AS_COORDINATOR]).exit_code == 0
    (row,) = json.loads(runner.invoke(cli, ["webhooks", "list", "--json"]).output)
    assert row["disabled_reason"] == "coordinator"

    refused = runner.invoke(
        cli, ["webhooks", "disable", endpoint, "--user", "fp-1", "--as-agency", "unhcr"]
    )  # not refused for the role (the CLI acts as coordinator): refused as already disabled
    assert refused.exit_code == 1

    network_type = runner.invoke(
        cli,
        [
            "webhooks",
            "set-types",
            endpoint,
            "--type",
            "org.psea.cbcm.network.agency_registered.v1",
            *AS_COORDINATOR,
        ],
    )
    assert network_type.exit_code == 1  # the network's events are no agency's

    assert runner.invoke(cli, ["webhooks", "remove", endpoint, *AS_COORDINATOR]).exit_code == 0
    assert json.loads(runner.invoke(cli, ["webhooks", "list", "--json"]).output) == []


def test_an_agency_that_is_not_a_member_or_a_plain_http_url_is_refused(env: Path) -> None:
    runner = CliRunner()
    for agency, url in (("nobody", "https://x.example/h"), ("wfp", "http://x.example/h")):
        refused = runner.invoke(
            cli,
            [
                "webhooks",
                "register",
                "--agency",
                agency,
                "--url",
                url,
                "--type",
                RECEIVED,
                *AS_COORDINATOR,
            ],
        )
        assert refused.exit_code == 1, refused.output
    assert json.loads(runner.invoke(cli, ["webhooks", "list", "--json"]).output) == []
