"""The generated contracts committed under ``docs/contracts/`` (OpenAPI, AsyncAPI, one JSON
Schema per published message) are what the code generates now."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.cli.contracts import COMMITTED, SCHEMAS_DIR, WRITE_COMMAND, contract_files
from services.cli.main import cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return contract_files()


def drift(directory: Path, generated: dict[str, str]) -> list[str]:
    """What differs between ``directory`` and the generated files, one line each."""
    on_disk = {
        str(p.relative_to(directory)): p.read_text(encoding="utf-8")
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }
    problems = [f"{name}: missing" for name in generated if name not in on_disk]
    problems += [f"{name}: no longer generated" for name in on_disk if name not in generated]
    problems += [
        f"{name}: differs"
        for name, text in generated.items()
        if name in on_disk and on_disk[name] != text
    ]
    return problems


def test_the_committed_contracts_are_the_generated_ones(generated: dict[str, str]) -> None:
    problems = drift(REPO / COMMITTED, generated)
    assert problems == [], (
        f"{COMMITTED}/ is stale ({'; '.join(problems)}): regenerate it with `{WRITE_COMMAND}` "
        "and commit the result"
    )


def test_the_drift_check_sees_a_changed_a_missing_and_a_stale_file(tmp_path: Path) -> None:
    # given a copy of the generated files, then one changed, one removed and one left over
    generated = {
        "asyncapi.json": "{}\n",
        "openapi.json": "{}\n",
        f"{SCHEMAS_DIR}/a.schema.json": "{}\n",
        f"{SCHEMAS_DIR}/b.schema.json": "{}\n",
    }
    for name, text in generated.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert drift(tmp_path, generated) == []
    (tmp_path / "openapi.json").write_text('{"paths": {}}\n')
    (tmp_path / SCHEMAS_DIR / "a.schema.json").unlink()
    (tmp_path / SCHEMAS_DIR / "old.schema.json").write_text("{}\n")
    # when compared, then each is named
    assert sorted(drift(tmp_path, generated)) == [
        "openapi.json: differs",
        f"{SCHEMAS_DIR}/a.schema.json: missing",
        f"{SCHEMAS_DIR}/old.schema.json: no longer generated",
    ]


def test_cbcm_contracts_write_makes_exactly_the_generated_tree(
    tmp_path: Path, generated: dict[str, str]
) -> None:
    # given a directory holding a schema no type has any more
    (tmp_path / SCHEMAS_DIR).mkdir()
    (tmp_path / SCHEMAS_DIR / "org.psea.cbcm.gone.v1.schema.json").write_text("{}\n")
    # when the command writes the contracts there
    done = CliRunner().invoke(cli, ["contracts", "write", str(tmp_path)])
    # then the tree is the generated one, the stale file removed
    assert done.exit_code == 0, done.output
    assert drift(tmp_path, generated) == []
