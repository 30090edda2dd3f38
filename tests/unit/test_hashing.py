"""Verify's batch hashing (ADR 33): the C module, its Python twin and ``hashlib`` agree byte
for byte on any input, and both refuse bad arguments alike, before hashing anything."""

from __future__ import annotations

import hashlib
import random
from array import array
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.audit import hashing
from services.audit.merkle import leaf_hash, tree_hash

IMPLEMENTATIONS = {
    "c": (hashing.sha256_segments, hashing.rfc6962_roots),
    "python": (hashing.python_sha256_segments, hashing.python_rfc6962_roots),
}


def test_the_c_module_is_built_in_this_install() -> None:
    """``pip install -e .`` builds it where gcc and OpenSSL's headers are (make installs
    the project so): a build that failed silently would leave verify four times slower."""
    assert hashing.ACCELERATED
    assert hashing.sha256_segments is not hashing.python_sha256_segments


@st.composite
def pieces(draw: st.DrawFn) -> tuple[bytes, list[int], bytes]:
    data = draw(st.binary(max_size=600))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    prefix = draw(st.sampled_from([b"", b"\x00", b"\x01"]) | st.binary(max_size=70))
    return data, cuts, prefix


@given(pieces())
def test_segments_are_hashed_as_hashlib_hashes_them(case: tuple[bytes, list[int], bytes]) -> None:
    data, cuts, prefix = case
    expected = b"".join(hashlib.sha256(prefix + data[a:b]).digest() for a, b in pairwise(cuts))
    for name, (segments, _) in IMPLEMENTATIONS.items():
        got = segments(data, array("q", cuts), prefix)
        assert got == expected, name
        # a memoryview and a bytearray are read alike; no prefix is an empty one
        assert segments(memoryview(bytearray(data)), array("q", cuts), prefix) == expected
        if not prefix:
            assert segments(data, array("q", cuts)) == expected


@given(st.integers(0, 3), st.sampled_from([1, 2, 4, 8, 256]), st.randoms())
def test_roots_are_rfc6962_tree_hashes(groups: int, width: int, rng: random.Random) -> None:
    leaves = [leaf_hash(rng.randbytes(32)) for _ in range(groups * width)]
    expected = b"".join(tree_hash(leaves[g * width : (g + 1) * width]) for g in range(groups))
    for name, (_, roots) in IMPLEMENTATIONS.items():
        assert roots(b"".join(leaves), width) == expected, name


BAD_SEGMENTS = {
    "bounds going back": (b"abcdef", [0, 4, 2]),
    "a bound past the end": (b"abcdef", [0, 7]),
    "a negative bound": (b"abcdef", [-1, 3]),
}


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("bad", list(BAD_SEGMENTS))
def test_bad_bounds_are_refused(implementation: str, bad: str) -> None:
    segments, _ = IMPLEMENTATIONS[implementation]
    data, bounds = BAD_SEGMENTS[bad]
    with pytest.raises(ValueError, match="bounds"):
        segments(data, array("q", bounds))
    with pytest.raises(ValueError, match="64-bit"):
        segments(data, b"\x00\x00\x00")  # not a whole number of 8-byte integers


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
def test_the_arguments_are_positional_only_in_both(implementation: str) -> None:
    segments, roots = IMPLEMENTATIONS[implementation]
    with pytest.raises(TypeError):
        segments(b"ab", array("q", [0, 2]), prefix=b"")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        roots(bytes(64), width=2)  # type: ignore[call-arg]


def test_the_log_reader_refuses_a_range_it_cannot_count() -> None:
    """A negative first position, or a last one before it: refused before any reading (the
    count of a range from -2**63 to 2**63 - 1 overflowed, UBSan found)."""
    from services.event_store import _log_reader  # noqa: PLC0415

    for first, last in ((-(2**63), 2**63 - 1), (-1, 5), (5, 4)):
        with pytest.raises(ValueError, match="range"):
            _log_reader.read_range("unused.db", "events", "events_chain", first, last, 0, bytes(32))


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
def test_bad_widths_and_leaves_are_refused(implementation: str) -> None:
    _, roots = IMPLEMENTATIONS[implementation]
    for width in (0, 3, -2, 1 << 21):
        with pytest.raises(ValueError, match="width"):
            roots(bytes(32 * 4), width)
    with pytest.raises(ValueError, match="whole groups"):
        roots(bytes(32 * 3), 2)
    with pytest.raises(TypeError):
        roots("not bytes", 2)  # type: ignore[arg-type]
