"""Ids: ULIDs as the spec encodes them (time first, so they sort by creation)."""

from __future__ import annotations

from omni.ids import is_customer_id, new_customer_id, ulid

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _value(text: str) -> int:
    value = 0
    for char in text:
        value = value * 32 + CROCKFORD.index(char)
    return value


def test_the_time_part_is_the_specs_encoding() -> None:
    # The ULID spec's example: 1469918176385 ms encodes as 01ARYZ6S41.
    assert ulid(1469918176385)[:10] == "01ARYZ6S41"
    assert ulid(0)[:10] == "0000000000"
    assert ulid(2**48 - 1)[:10] == "7ZZZZZZZZZ"


def test_a_ulid_is_26_crockford_characters_of_time_and_80_random_bits() -> None:
    made = [ulid(1_700_000_000_000) for _ in range(200)]
    assert all(len(u) == 26 and set(u) <= set(CROCKFORD) for u in made)
    assert {_value(u) >> 80 for u in made} == {1_700_000_000_000}
    assert len(set(made)) == 200
    # Every random bit gets used: some id has each of the 80 set, and each clear.
    randoms = [_value(u) & (2**80 - 1) for u in made]
    assert all(any(r >> bit & 1 for r in randoms) for bit in range(80))
    assert all(any(not r >> bit & 1 for r in randoms) for bit in range(80))


def test_ulids_sort_by_time_and_customer_ids_are_recognised() -> None:
    times = [1, 31, 32, 10**12, 1_700_000_000_000, 2**47]
    made = [ulid(t) for t in times]
    assert sorted(reversed(made)) == made
    cid = new_customer_id()
    assert is_customer_id(cid)
    assert not is_customer_id(cid[:-1]) and not is_customer_id(cid.lower())
