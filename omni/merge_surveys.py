"""What a merge and its undo do with the absorbed customer's open survey (omni.surveys).

A merge carries it to the survivor, so the customer's answer — which now finds the
survivor by its identity — is still recognised; the survivor keeps its own open survey
when it has one (at most one per customer), and the source's is then set aside. The
merge record keeps the source's survey as it was (field `survey`, and `survey_carried`
when the survivor took it), so undoing the merge gives it back to the source, unless it
was answered since (the answer stays on the survivor's timeline, where it was made).
The last-NPS date (`nps_at`) is a customer-hash field: the merge rule takes the newer
(omni.merge.absorb_plan) and the undo's field restore gives each record its own back.

Each function is one idempotent step (merge.STEPS, unmerge.STEPS): written, then
marked, so running it again after a crash finishes it; the survey keys and the merge
record are in different slots, so no step is a transaction across them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from omni import keys
from omni.clock import now_ms
from omni.store import Store
from omni.store.reply import as_bytes, as_text


def _fields(raw: dict[Any, Any]) -> dict[str, bytes]:
    return {as_bytes(k).decode(): as_bytes(v) for k, v in raw.items()}


def _open(survey: dict[str, bytes]) -> bool:
    return bool(survey.get("id")) and int(survey.get("expires", b"0")) > now_ms()


async def _put(store: Store, cid: str, survey: dict[str, bytes]) -> None:
    async with store.redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.survey(cid))
        pipe.hset(keys.survey(cid), mapping=survey)  # type: ignore[arg-type]
        pipe.pexpireat(keys.survey(cid), int(survey["expires"]))
        await pipe.execute()


async def carry(store: Store, merge_id: str, survivor: str, source: str) -> None:
    """The merge's step: the source's open survey goes to the survivor (if it has none)."""
    redis = store.redis
    record = keys.merge_record(merge_id)
    theirs = _fields(await redis.hgetall(keys.survey(source)))
    if not _open(theirs):
        if theirs:
            await redis.delete(keys.survey(source))
        return
    if await redis.hexists(record, "survey"):  # an earlier run got this far
        await redis.delete(keys.survey(source))
        return
    mine = as_text(await redis.hget(keys.survey(survivor), "id"))
    carried = mine == as_text(theirs["id"])  # an earlier run of this step took it already
    if not mine:
        await _put(store, survivor, theirs)
        carried = True
    await redis.hset(record, mapping={"survey": msgspec.msgpack.encode(theirs),
                                      "survey_carried": "1" if carried else ""})  # fmt: skip
    await redis.delete(keys.survey(source))


async def give_back(store: Store, merge_id: str, survivor: str, source: str) -> None:
    """The undo's step: the source's survey as it was at the merge, if still unanswered
    and not expired; the survivor no longer has it open."""
    redis = store.redis
    record = keys.merge_record(merge_id)
    blob, carried, done = await redis.hmget(record, ["survey", "survey_carried", "survey_back"])
    if not blob or done:
        return
    survey: dict[str, bytes] = msgspec.msgpack.decode(as_bytes(blob))
    held = as_text(await redis.hget(keys.survey(survivor), "id"))
    ours = held == as_text(survey["id"])
    # Carried and no longer open on the survivor: answered there (or expired) — not back.
    if _open(survey) and (ours or not carried):
        await _put(store, source, survey)
    if ours:
        await redis.delete(keys.survey(survivor))
    await redis.hset(record, "survey_back", 1)


# The merge record's fields that name the survey: an erasure removes them with the rest.
RECORD_FIELDS = ("survey", "survey_carried")
