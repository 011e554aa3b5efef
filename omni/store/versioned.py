"""Revisioned writes of a customer hash's fields (write_field.lua, beside this module).

Every write a caller can make with If-Match — facts, cart, conversation, profile, and
the identities a link adds — goes through `write_part`: one script checks the revision,
writes the fields and moves the revision on, so a stale If-Match changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omni import keys
from omni.errors import Moved, NotFound, PreconditionFailed, StoreError
from omni.ids import is_customer_id
from omni.scripts import Script
from omni.store.reply import as_text


async def write_part(
    script: Script,
    cid: str,
    part: str,
    if_match: str | None,
    sets: list[tuple[str, bytes]],
    deletes: Sequence[str] = (),
) -> tuple[str, bytes | None]:
    """Write `part`'s fields when `if_match` (a revision) is still current (or not
    given); returns the new revision and the part's field before (for one field)."""
    if not is_customer_id(cid):
        raise NotFound(f"no customer {cid}")
    args: list[Any] = [part, if_match or "", len(sets)]
    for name, value in sets:
        args += [name, value]
    args += list(deletes)
    status, rev, old = await script(keys=[keys.customer(cid)], args=args)
    if status == -2:
        raise NotFound(f"no customer {cid}")
    if status == -3:
        raise Moved(cid, as_text(old) or "")
    if status == -1:
        raise PreconditionFailed(
            f"If-Match {if_match} is stale: the {part} changed since; read it and retry",
            current_version=str(rev),
        )
    if status != 1:
        raise StoreError(f"unexpected write status {status!r}")
    return str(rev), old
