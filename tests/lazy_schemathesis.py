"""Schemathesis' tests built when they run, not when they are collected.

Schemathesis builds each operation's Hypothesis test at collection: its strategies, and every
case of the examples and coverage phases (the coverage phase's hundreds of boundary and
invalid variants), attached as explicit examples. Under pytest-xdist every worker collects
every test, so each of the (up to four) workers built all 183 tests of
``tests/integration/test_api_schema.py`` and then ran about a quarter of them: some 6 s of CPU
per worker, three quarters of it for tests another worker runs.

``install()`` makes each test's build lazy: collection gets a stand-in with the built test's
signature (the test function's, without the arguments Hypothesis fills), marks and name, and
the real test, built by schemathesis' own ``build_operation_test`` with the same arguments, is
put in the item's place just before it runs (``swap_in``, from ``pytest_runtest_setup``). The
requests are the same: their generation is derandomised, a function of the operation and the
test function's source only, and building touches no state another operation's build reads
(``tests/unit/test_lazy_schemathesis.py`` compares the cases of both builds).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import pytest

BUILD = "_cbcm_lazy_build"
"""The stand-in's attribute: the function that builds (once) and returns the real test."""
FORGET = "_cbcm_lazy_forget"
"""The stand-in's attribute: the function that drops the built test (built again if asked)."""
STAND_IN = "_cbcm_lazy_stand_in"
"""The item's attribute: its stand-in, while the built test is in its place."""


def install() -> None:
    """Replace schemathesis' ``build_operation_test`` (looked up by its pytest plugin each
    time it collects) with the lazy one; idempotent."""
    from schemathesis.pytest import _test_builder  # noqa: PLC0415 - only when installing

    if getattr(_test_builder.build_operation_test, BUILD, False):
        return
    eager = _test_builder.build_operation_test

    @functools.wraps(eager)
    def lazy(*, test_func: Callable[..., Any], given_kwargs: dict[str, Any], **kw: Any) -> Any:
        if inspect.iscoroutinefunction(test_func):  # schemathesis attaches to the built test
            return eager(test_func=test_func, given_kwargs=given_kwargs, **kw)
        built: list[Callable[..., Any]] = []

        def build() -> Callable[..., Any]:
            if not built:
                _probes_as_when_eager(kw["operation"])
                built.append(eager(test_func=test_func, given_kwargs=given_kwargs, **kw))
            return built[0]

        def stand_in(*args: Any, **kwargs: Any) -> Any:
            return build()(*args, **kwargs)  # called directly (not through pytest)

        # what pytest reads at collection: the arguments it must supply (Hypothesis fills
        # ``case`` and the given ones), the marks, the names
        signature = inspect.signature(test_func)
        filled = {"case", *given_kwargs}
        stand_in.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[p for p in signature.parameters.values() if p.name not in filled]
        )
        for attribute in ("__name__", "__qualname__", "__module__", "__doc__", "pytestmark"):
            if hasattr(test_func, attribute):
                setattr(stand_in, attribute, getattr(test_func, attribute))
        # Hypothesis' plugin marks its tests at collection by this attribute
        stand_in.is_hypothesis_test = True  # type: ignore[attr-defined]
        setattr(stand_in, BUILD, build)
        setattr(stand_in, FORGET, built.clear)
        return stand_in

    setattr(lazy, BUILD, True)
    _test_builder.build_operation_test = lazy


class _FirstOfItsPath(set[tuple[str, str]]):
    """The coverage phase's record of the undeclared methods already probed on a path, as
    the eager collection left it when it came to the operation being built: schemathesis
    sends each ``(path, method)`` probe once, with the first operation of the path that is
    built, and eagerly that was the first of the path in the schema's order. Built lazily, in
    any order, each worker would attach them to whichever operation it ran first: the same
    requests, but some sent twice and under another test's name."""

    def __init__(self, first: dict[str, str]) -> None:
        super().__init__()
        self.first = first
        self.building = ""

    def __contains__(self, key: object) -> bool:
        path = key[0] if isinstance(key, tuple) else None
        return path is not None and self.first.get(path) != self.building

    def add(self, key: tuple[str, str]) -> None:
        pass


def _probes_as_when_eager(operation: Any) -> None:
    schema = operation.schema
    seen = getattr(schema, "coverage_unexpected_methods_seen", None)
    if not isinstance(seen, _FirstOfItsPath):
        first: dict[str, str] = {}
        for result in schema.get_all_operations():
            other = result.ok()  # the collection just walked the same operations
            first.setdefault(other.path, other.label)
        seen = _FirstOfItsPath(first)
        schema.coverage_unexpected_methods_seen = seen
    seen.building = operation.label


def swap_in(item: pytest.Item) -> None:
    """Put the built test in the stand-in's place (before the item runs)."""
    stand_in = getattr(item, "obj", None)
    build = getattr(stand_in, BUILD, None)
    if build is not None and isinstance(item, pytest.Function):
        setattr(item, STAND_IN, stand_in)
        item.obj = build()


def release(item: pytest.Item) -> None:
    """Put the stand-in back once the item has run. The built test (its strategies, every
    explicit case of its examples and coverage phases: about a thousand objects) is otherwise
    kept by the item and the stand-in for the rest of the worker's run, and every full pass
    of the garbage collector walks them all again (``test_api_schema.py``'s 272 tests: from
    50,000 to 350,000 objects over the module). Run again, the item builds it again, the
    same."""
    stand_in = getattr(item, STAND_IN, None)
    if stand_in is not None and isinstance(item, pytest.Function):
        getattr(stand_in, FORGET)()
        item.obj = stand_in
        delattr(item, STAND_IN)
