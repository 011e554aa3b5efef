"""Text as channels limit it: cut where no character cluster breaks, and cleaned of what
cannot be stored. Pure; shared by every channel that has to shorten what it sends."""

from __future__ import annotations

import re
import unicodedata

_SURROGATE = re.compile(r"[\ud800-\udfff]")


def clean(text: str) -> str:
    """JSON can carry lone surrogates (`\\ud83d` alone); they cannot be stored as UTF-8."""
    return _SURROGATE.sub("\ufffd", text)


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


def shorten(text: str, limit: int, ellipsis: str = "") -> str:
    """`text` in at most `limit` characters, cut at a cluster boundary, with `ellipsis`
    added (within the limit) when it had to be cut."""
    if len(text) <= limit:
        return text
    room = limit - len(ellipsis)
    return text[: safe_cut(text, room) or room].rstrip() + ellipsis


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
