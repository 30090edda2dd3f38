"""Durations in answers are RFC 3339 text that reads back to the same duration (the policy's
deadlines): pydantic's own wrote 366 days as P1Y1D, which RFC 3339's grammar refuses, and a
float format wrote 1 µs as PT1e-06S and lost digits of longer fractions."""

from __future__ import annotations

import re
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from services.api.schemas.common import Duration, iso_duration

# RFC 3339 Appendix A restricted to days and seconds, with the decimal fraction of seconds that
# ISO 8601 allows (a deadline given to the microsecond)
RFC3339_DAYS_SECONDS = re.compile(r"^P(?:\d+D(?:T\d+(?:\.\d+)?S)?|T\d+(?:\.\d+)?S)$")

durations = TypeAdapter(Duration)


@given(st.timedeltas(min_value=timedelta(0)))
def test_a_duration_is_written_in_rfc_3339_and_read_back_exactly(value: timedelta) -> None:
    text = iso_duration(value)
    assert RFC3339_DAYS_SECONDS.fullmatch(text), text
    assert durations.validate_python(text) == value
