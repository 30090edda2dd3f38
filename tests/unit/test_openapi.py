"""The published OpenAPI document: every operation documented, examples that are valid."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from services.api.app import create_app
from services.api.schemas import cases, common, feedback, network, public, referrals
from services.settings import Settings
from tests.api_world import cheap_hasher


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    return create_app(
        Settings(data_dir=tmp_path_factory.mktemp("openapi")), receipt_hasher=cheap_hasher()
    )


def models_with_examples() -> list[type[BaseModel]]:
    found = []
    for module in (cases, common, feedback, network, public, referrals):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseModel):
                extra: Any = value.model_config.get("json_schema_extra")
                if isinstance(extra, dict) and extra.get("examples"):
                    found.append(value)
    return found


def test_the_main_requests_carry_examples() -> None:
    names = {m.__name__ for m in models_with_examples()}
    assert {"ComplaintIn", "AssessmentIn", "PublicComplaintIn", "WrittenOut"} <= names


@pytest.mark.parametrize("model", models_with_examples(), ids=lambda m: m.__name__)
def test_every_example_is_valid_for_its_own_schema(model: type[BaseModel]) -> None:
    extra: Any = model.model_config["json_schema_extra"]
    for example in extra["examples"]:
        model.model_validate(example)


def test_every_v1_operation_but_the_public_ones_requires_a_bearer_token(api: FastAPI) -> None:
    document = api.openapi()
    assert "HTTPBearer" in document["components"]["securitySchemes"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            secured = bool(operation.get("security"))
            if path.startswith("/v1/public/") or not path.startswith("/v1/"):
                assert not secured, (method, path)
            else:
                assert secured, (method, path)
                assert "404" in operation["responses"], (method, path)


def test_errors_are_documented_as_problem_json(api: FastAPI) -> None:
    operation = api.openapi()["paths"]["/v1/cases"]["post"]
    assert "application/problem+json" in operation["responses"]["422"]["content"]


def test_the_document_is_served(api: FastAPI) -> None:
    from fastapi.testclient import TestClient  # noqa: PLC0415

    with TestClient(api) as client:
        answer = client.get("/openapi.json")
    assert answer.status_code == 200
    assert answer.json()["info"]["title"] == "cbcm"
