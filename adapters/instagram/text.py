"""Text as Instagram sends it: cut into the Send API's 1000-byte parts at character-cluster
boundaries (an emoji family or a flag is never split). Surrogates and cluster boundaries
are every channel's: `omni.text`."""

from __future__ import annotations

from typing import Any

from omni.text import safe_cut

SEND_TEXT_MAX_BYTES = 1000


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def split_text(text: str, limit: int = SEND_TEXT_MAX_BYTES) -> list[str]:
    """Cut text into parts of at most `limit` UTF-8 bytes, never inside a character
    cluster (emoji with modifiers or ZWJ, combining marks, flags), preferring a
    whitespace break in the second half of a part; the break itself is dropped."""
    parts: list[str] = []
    rest = text
    while rest:
        if len(rest.encode()) <= limit:
            parts.append(rest)
            break
        fits = len(rest.encode()[:limit].decode(errors="ignore"))
        cut = safe_cut(rest, fits) or fits
        space = max(rest.rfind(" ", 0, cut), rest.rfind("\n", 0, cut))
        if space > cut // 2:
            part, rest = rest[:space], rest[space + 1 :]
        else:
            part, rest = rest[:cut], rest[cut:]
        if part:
            parts.append(part)
    return parts


# -- parsing -----------------------------------------------------------------------------
