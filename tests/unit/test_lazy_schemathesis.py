"""Schemathesis' tests built lazily (``tests/lazy_schemathesis.py``) send what they sent when
built at collection: the same cases, under the same test, whatever order they are built in."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from schemathesis.generation.feedback import FeedbackSources
from schemathesis.pytest import _test_builder

from tests import lazy_schemathesis
from tests.lazy_schemathesis import BUILD

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "t", "version": "1"},
    "paths": {
        "/things": {
            "get": {
                "parameters": [
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}}
                ],
                "responses": {"200": {"description": "ok"}},
            },
            "post": {
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string", "maxLength": 5}},
                            }
                        }
                    },
                },
                "responses": {"201": {"description": "made"}},
            },
        },
        "/things/{id}": {
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {"responses": {"200": {"description": "ok"}}},
            "delete": {"responses": {"204": {"description": "gone"}}},
        },
    },
}


def a_test(case: schemathesis.Case, world: object) -> None:
    """Stands for a test function: its source seeds nothing here (derandomised by label)."""


def _cases(test: Callable[..., Any]) -> list[str]:
    examples = getattr(test, "hypothesis_explicit_examples", None) or []
    return [
        re.sub(r" at 0x[0-9a-f]+", "", repr((*fields(c), c.meta.phase if c.meta else None)))
        for e in examples
        for c in e.kwargs.values()
    ]


def fields(c: schemathesis.Case) -> tuple[Any, ...]:
    return (c.method, c.path, c.path_parameters, c.headers, c.cookies, c.query, c.body)


def _built(order: Callable[[list[str]], list[str]] | None) -> dict[str, list[str]]:
    """Each operation's cases: built at once in the schema's order (``order`` None, as
    schemathesis does at collection), or lazily, the tests built in ``order``."""
    build = _test_builder.build_operation_test
    eager = getattr(build, "__wrapped__", build)  # the conftest installed the lazy one
    schema = schemathesis.openapi.from_dict(SPEC)
    feedback = FeedbackSources()
    made = {
        result.ok().label: (eager if order is None else build)(
            config=schema.config,
            operation=result.ok(),
            test_func=a_test,
            given_kwargs={},
            feedback=feedback,
        )
        for result in schema.get_all_operations()
    }
    if order is not None:
        made = {label: getattr(made[label], BUILD)() for label in order(list(made))}
    return {label: _cases(test) for label, test in made.items()}


def test_built_lazily_in_any_order_each_test_has_the_cases_it_had_when_built_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lazy_schemathesis.install()
    at_once = _built(None)
    # the probes of undeclared methods go with the first operation of each path
    assert any("Unspecified HTTP method" in c for c in at_once["GET /things"])
    assert not any("Unspecified HTTP method" in c for c in at_once["POST /things"])

    assert _built(list) == at_once
    assert _built(lambda labels: labels[::-1]) == at_once

    # without the record of the probes as the eager build left it, the reverse order moves
    # them to another test
    monkeypatch.setattr(lazy_schemathesis, "_probes_as_when_eager", lambda operation: None)
    assert _built(lambda labels: labels[::-1]) != at_once
