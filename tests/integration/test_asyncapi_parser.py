"""The AsyncAPI document as the official tools read it: ``@asyncapi/parser`` from the npm
registry (the parser behind ``asyncapi validate``, with the same rules), installed by ``npm ci``
from ``tests/asyncapi/package-lock.json``. Node and npm are required: fails, never skips."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from services.cli.contracts import asyncapi_text
from tests.node_packages import REPO, installed, node_and_npm

PACKAGE = REPO / "tests" / "asyncapi"


def broken(text: str) -> str:
    """The document with one reference written as the old layout wrote them: relative to the
    embedded schema's own $id, which the AsyncAPI tools ignore."""
    document = json.loads(text)
    schema = document["components"]["schemas"]["case.received.v1"]
    schema["$id"] = "urn:cbcm:schema:org.psea.cbcm.case.received.v1"
    schema["properties"]["data"]["$ref"] = "#/$defs/CaseReceivedV1"
    return json.dumps(document)


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """What the parser says of the document ``cbcm contracts asyncapi`` writes ("ours") and
    of the same with one reference broken ("broken"), in one run of Node."""
    script = installed(PACKAGE) / "check.mjs"
    tmp = tmp_path_factory.mktemp("asyncapi")
    text = asyncapi_text()
    paths = {"ours": tmp / "asyncapi.json", "broken": tmp / "broken.json"}
    paths["ours"].write_text(text, encoding="utf-8")
    paths["broken"].write_text(broken(text), encoding="utf-8")
    node, _ = node_and_npm()
    done = subprocess.run(
        [node, str(script), *map(str, paths.values())],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 2, done.stderr[-2000:]
    assert done.returncode == 1  # the broken one
    return dict(zip(paths, lines, strict=True))


def test_the_official_parser_builds_the_asyncapi_document_with_no_error(
    parsed: dict[str, dict[str, Any]],
) -> None:
    # given the document `cbcm contracts asyncapi` writes, when the official parser reads it
    result = parsed["ours"]
    # then it builds, with no error and no warning ("use 3.1.0" is an information)
    errors = [d for d in result["diagnostics"] if d["severity"] == "error"]
    assert (result["built"], result["errors"], errors) == (True, 0, [])
    assert all(d["severity"] in ("information", "hint") for d in result["diagnostics"]), result


def test_the_parser_check_fails_on_a_reference_that_only_an_id_would_resolve(
    parsed: dict[str, dict[str, Any]],
) -> None:
    # given the document with a reference only its embedded $id would resolve
    result = parsed["broken"]
    # then the parser reports the error and does not build the document
    assert not result["built"] and result["errors"] >= 1
    assert any("#/$defs/CaseReceivedV1" in d["message"] for d in result["diagnostics"])
