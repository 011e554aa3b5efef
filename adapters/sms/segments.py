"""SMS segments, pure: how many parts a text is sent as, in which encoding
(https://www.twilio.com/docs/glossary/what-sms-character-limit).

A text of only GSM-7 characters is 160 characters in one segment, 153 per segment when
longer (the rest of each is the concatenation header); `^ { } \\ [ ~ ] | €` and form feed
take two (an escape and the character), and a pair is never split across segments. One
character outside GSM-7 makes the whole text UCS-2: 70 UTF-16 code units in one segment,
67 per segment when longer, a surrogate pair (an emoji) never split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

_GSM_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED: Final = frozenset("^{}\\[~]|€\f")


@dataclass(frozen=True)
class Segments:
    encoding: Literal["GSM-7", "UCS-2"]
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    count: int  # segments the text is sent as


def segments(text: str) -> Segments:
    """How many segments `text` is sent as, in which encoding (see the module doc)."""
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENDED for ch in text):
        sizes = [2 if ch in _GSM_EXTENDED else 1 for ch in text]
        return Segments("GSM-7", sum(sizes), _count(sizes, single=160, part=153))
    sizes = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return Segments("UCS-2", sum(sizes), _count(sizes, single=70, part=67))


def _count(sizes: Sequence[int], *, single: int, part: int) -> int:
    """Segments for characters of these sizes: greedy, a character never split."""
    if sum(sizes) <= single:
        return 1
    count, used = 1, 0
    for size in sizes:
        if used + size > part:
            count, used = count + 1, 0
        used += size
    return count
