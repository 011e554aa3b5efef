"""Time as omni stores it (epoch milliseconds) and shows it (RFC 3339, UTC)."""

from __future__ import annotations

import time
from functools import lru_cache

MILLIS = tuple(f".{n:03d}Z" for n in range(1000))  # a page of messages formats many


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: int | str | bytes | None) -> str | None:
    if ms is None or ms == b"" or ms == "":
        return None
    seconds, millis = divmod(int(ms), 1000)
    return iso_second(seconds) + MILLIS[millis]


@lru_cache(maxsize=8192)
def iso_second(seconds: int) -> str:
    """An epoch second as RFC 3339 without the fraction (`iso` adds `MILLIS[ms]`)."""
    # Formatting is the costly part and a page of messages shares few seconds: cached,
    # a context read's timestamps cost a dict lookup each (it was a tenth of its time).
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


_MILLIS_TEXT = {f"{n:03d}": text for n, text in enumerate(MILLIS)}
# An entry id's second (its first 10 digits) as RFC 3339: a plain dict rather than an
# lru_cache, whose bookkeeping cost more than the lookup itself (50 a history page).
# Emptied when full rather than kept in use order: the seconds of one page are
# mostly its own, so an LRU's order would keep little that is read again.
_SECONDS: dict[str, str] = {}
_SECONDS_MAX = 8192


def entry_iso(entry_id: str) -> str:
    """`iso(entry_ms(entry_id))`: when a stream entry was added, as RFC 3339. Once per
    message of every page read, so without arithmetic for the ids of the next 260 years
    (13 digits of milliseconds): the second's text, cached, and the milliseconds'."""
    if entry_id[13:14] == "-":
        second = entry_id[:10]
        text = _SECONDS.get(second)
        if text is None:
            text = _second_text(second)
        return text + _MILLIS_TEXT[entry_id[10:13]]
    return iso(entry_ms(entry_id)) or ""


def _second_text(second: str) -> str:
    if len(_SECONDS) >= _SECONDS_MAX:
        _SECONDS.clear()
    text = _SECONDS[second] = iso_second(int(second))
    return text


def entry_ms(entry_id: str | bytes) -> int:
    """The milliseconds part of a Redis stream entry id ("1700000000000-3", as text or
    as Redis sent it)."""
    if isinstance(entry_id, bytes):
        return int(entry_id.split(b"-", 1)[0])
    return int(entry_id.partition("-")[0])
