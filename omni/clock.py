"""Time as omni stores it (epoch milliseconds) and shows it (RFC 3339, UTC)."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: int | str | bytes | None) -> str | None:
    if ms is None or ms == b"" or ms == "":
        return None
    value = int(ms)
    return (
        datetime.fromtimestamp(value / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def entry_ms(entry_id: str) -> int:
    """The milliseconds part of a Redis stream entry id ("1700000000000-3")."""
    return int(entry_id.partition("-")[0])
