"""Text as Instagram takes it: lone surrogates replaced (JSON can carry them, UTF-8
cannot), and long text cut at character-cluster boundaries (an emoji family or a flag
is never split), for the inbound text limit and the Send API's 1000 bytes a part."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

SEND_TEXT_MAX_BYTES = 1000
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """JSON can carry lone surrogates (`\\ud83d` alone); they cannot be stored as UTF-8."""
    return _SURROGATE.sub("\ufffd", text)


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


def safe_cut(text: str, cut: int) -> int:
    """The largest index <= cut that does not split a character cluster (approximate
    UAX #29: extenders, joiners, variation selectors, skin tones, tags, flag pairs)."""
    while 0 < cut < len(text) and (_extends(text[cut]) or text[cut - 1] == "\u200d"):
        cut -= 1
    if 0 < cut < len(text) and _regional(text[cut]) and _regional(text[cut - 1]):
        run = 0
        while cut - run > 0 and _regional(text[cut - run - 1]):
            run += 1
        cut -= run % 2
    return cut


def _extends(char: str) -> bool:
    point = ord(char)
    return (
        unicodedata.category(char) in ("Mn", "Me", "Mc")
        or point in (0x200D, 0xFE0E, 0xFE0F)
        or 0x1F3FB <= point <= 0x1F3FF  # skin tone modifiers
        or 0xE0020 <= point <= 0xE007F  # tag characters (subdivision flags)
    )


def _regional(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


# -- parsing -----------------------------------------------------------------------------
