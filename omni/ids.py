"""Identifiers: time-ordered ids for customers, messages and conversations, and the
opaque history cursor."""

from __future__ import annotations

import base64
import binascii
import os
import re
import time

from omni.errors import BadRequest

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)  # every 10 bits, encoded
_SHIFTS = tuple(range(120, -10, -10))
_ULID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
_STREAM_ID_RE = re.compile(r"^(\d{1,20})-(\d{1,20})$")


def ulid(now_ms: int | None = None) -> str:
    """A ULID: 48 bits of milliseconds, 80 random bits, Crockford base32 (26 chars)."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = ms << 80 | int.from_bytes(os.urandom(10), "big")
    # Two characters (10 bits) a step, most significant first: 13 steps make 26.
    return "".join([_PAIRS[value >> shift & 1023] for shift in _SHIFTS])


def new_customer_id() -> str:
    return "cus_" + ulid()


def new_message_id() -> str:
    return "msg_" + ulid()


def new_merge_id() -> str:
    return "mrg_" + ulid()


def is_merge_id(value: str) -> bool:
    return value.startswith("mrg_") and bool(_ULID_RE.match(value[4:]))


def is_customer_id(value: str) -> bool:
    return value.startswith("cus_") and bool(_ULID_RE.match(value[4:]))


Cursor = tuple[str, str | None]  # (timeline entry id, the customer whose timeline holds it)


def encode_cursor(entry_id: str, owner: str | None = None) -> str:
    """Make a timeline position into an opaque cursor for `before=`. The owner is named
    when a merged customer's history interleaves several timelines (whose entry ids
    can tie)."""
    raw = (f"v2.{entry_id}.{owner}" if owner else f"v1.{entry_id}").encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> Cursor:
    """Return the position inside a cursor, or raise BadRequest naming `before`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        raise BadRequest("the cursor is not one this API issued", field="before") from None
    version, _, rest = raw.partition(".")
    entry_id, _, owner = rest.partition(".") if version == "v2" else (rest, "", "")
    valid = version in ("v1", "v2") and _STREAM_ID_RE.match(entry_id)
    if not valid or (version == "v2" and not is_customer_id(owner)):
        raise BadRequest("the cursor is not one this API issued", field="before")
    return entry_id, owner or None
