"""The rest of the schemathesis matrix (``make fuzz``): the coverage phase as a focal point and
as an auditor.

The default suite (``tests/integration/test_api_schema.py``) runs every operation in all
three phases as the coordinator, and the examples and fuzzing phases as the two other
callers. The coverage phase sends the same deterministic requests whoever the caller is
(every boundary and every invalid variant of every parameter and body field, about 150 for
a large body): as the two other callers they mostly meet the same validation or the same
refusal. It is the most expensive part (about half of the module's CPU), so it runs
here, with the same checks, on the same world (docs/testing.md)."""

from __future__ import annotations

import pytest
import schemathesis

from tests.api_world import World
from tests.integration.test_api_schema import (
    CALLERS,
    FUZZ_SETTINGS,
    WITHOUT_TOKEN_PATHS,
    check_operation,
    existing,
    published_schema,
    world,
)

__all__ = ["existing", "world"]  # the fixtures, shared with the default suite's module

pytestmark = pytest.mark.fuzz

coverage_schema = published_schema(phases=("coverage",)).exclude(path_regex=WITHOUT_TOKEN_PATHS)


@coverage_schema.parametrize()
@pytest.mark.parametrize("caller", [c for c in CALLERS if c != "coordinator"])
@FUZZ_SETTINGS
def test_every_operation_coverage_as_the_others(
    case: schemathesis.Case, world: World, existing: dict[str, list[str]], caller: str
) -> None:
    check_operation(case, world, existing, caller)
