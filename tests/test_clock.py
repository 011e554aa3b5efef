"""Timestamps as the API shows them: RFC 3339, UTC, milliseconds, whatever the input form."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from omni.clock import entry_iso, entry_ms, iso


@pytest.mark.parametrize(
    "ms", [0, 1, 999, 1000, 59_999, 1_700_000_000_000, 1_767_225_600_123, 4_102_444_799_999]
)
def test_iso_matches_the_standard_library(ms: int) -> None:
    expected = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    assert iso(ms) == expected.replace("+00:00", "Z")
    assert iso(str(ms)) == iso(str(ms).encode()) == iso(ms)


def test_nothing_is_no_time() -> None:
    assert iso(None) is None and iso("") is None and iso(b"") is None
    assert entry_ms("1767225600123-4") == 1_767_225_600_123


@pytest.mark.parametrize(
    "entry",
    ["0-0", "1-0", "999-3", "1000-0", "1700000000000-0", "1767225600123-4", "9999999999999-0",
     "10000000000000-7", "1767225600000-18446744073709551615"],
)  # fmt: skip
def test_an_entry_id_reads_as_the_time_of_its_milliseconds(entry: str) -> None:
    assert entry_iso(entry) == iso(entry_ms(entry))


def test_entry_ids_of_more_seconds_than_are_cached_read_as_their_times() -> None:
    # Twice over ids of 20,000 distinct seconds (the cache holds 8,192 and is emptied
    # when full): every reading, first or cached, is the time of its milliseconds.
    rng = random.Random(16)
    entries = [f"{rng.randrange(10**12, 10**13)}-{rng.randrange(3)}" for _ in range(20_000)]
    for entry in entries + entries:
        assert entry_iso(entry) == iso(entry_ms(entry)), entry
