"""A message's metadata as channels build it from a provider's payload: scalars only,
strings cleaned and bounded, never more than METADATA_MAX keys. Pure; one way for every
channel (Instagram and WhatsApp read the same shapes of Meta's payloads)."""

from __future__ import annotations

import math
from typing import Any

from omni.model import METADATA_MAX, MetaValue
from omni.text import clean

META_STR_MAX = 512  # characters of one metadata string


class MetadataBag:
    """Metadata under construction: scalars only, strings bounded, first value wins,
    never more than METADATA_MAX keys."""

    def __init__(self) -> None:
        self.data: dict[str, MetaValue] = {}

    def put(self, key: str, value: Any) -> None:
        if len(self.data) >= METADATA_MAX or key[:64] in self.data or value is None:
            return
        if isinstance(value, str):
            value = clean(value)[:META_STR_MAX]
        elif not isinstance(value, int | float | bool) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            return
        self.data[key[:64]] = value


def scalar(value: Any) -> str | int | float | bool | None:
    """A provider's value as a metadata value: a bounded string, a number or a bool."""
    if isinstance(value, str):
        return clean(value)[:META_STR_MAX]
    return value if isinstance(value, int | float | bool) else None
