"""The audit room (`store.audit`): every change of who is who, per customer.

Each identity change — a channel identity joining a customer on verified evidence (a
verified login, a caller whose number the customer verified), a link token redeemed,
an identity an agent linked, a merge, an undone merge — is one entry in the audit log of
every customer it touched (`omni:audit:{C}`, a stream), saying who did it (the API key's
name and role, or the channel), when, on what evidence, and in which request
(its X-Request-Id).

Erasure does not delete the log: it scrubs it (`scrub`) to what names no one — the
action, when, the customer ids, the merge id, the request id and the role of who did
it; the external ids, the evidence and the key's name go. So an operator can still see
that record A was merged into B and undone, after both were erased.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Literal

import msgspec
import structlog
from redis.asyncio import Redis

from omni import keys
from omni.clock import iso, now_ms
from omni.errors import BadRequest
from omni.ids import is_customer_id
from omni.store.reply import as_bytes, as_text

AuditAction = Literal["join", "link_token", "link", "merge", "unmerge"]
AUDIT_MAX = 10_000  # entries kept per customer (identity changes are rare)


class Actor(msgspec.Struct, frozen=True, omit_defaults=True):
    """Who made a change: an API key (`name`, `role`), a channel, or omni itself."""

    kind: Literal["key", "channel", "system"]
    name: str | None = None
    role: str | None = None


# Who the current request is (omni.auth sets it for every authenticated route); a
# channel's webhook has none, and its changes are the channel's.
ACTOR: ContextVar[Actor | None] = ContextVar("omni_actor", default=None)


class AuditIdentity(msgspec.Struct, frozen=True, omit_defaults=True):
    channel: str
    external_id: str | None = None  # None once scrubbed


class _Stored(msgspec.Struct, frozen=True, omit_defaults=True):
    at: str
    action: AuditAction
    customer_id: str
    actor: Actor
    evidence: str | None = None
    request_id: str | None = None
    identity: AuditIdentity | None = None
    other_customer_id: str | None = None
    merge_id: str | None = None
    erased: bool = False


class AuditEntry(msgspec.Struct, frozen=True):
    id: str  # the entry's position in the log (a cursor for `before`)
    at: str
    action: AuditAction
    customer_id: str
    actor: Actor
    evidence: str | None
    request_id: str | None
    identity: AuditIdentity | None
    other_customer_id: str | None  # the other record of a merge or an undo
    merge_id: str | None
    erased: bool  # scrubbed to ids by an erasure


class AuditPage(msgspec.Struct, frozen=True):
    entries: list[AuditEntry]
    next_cursor: str | None


def _request_id() -> str | None:
    found = structlog.contextvars.get_contextvars().get("request_id")
    return str(found) if found else None


class Audit:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def record(
        self,
        cids: list[str],
        action: AuditAction,
        *,
        evidence: str | None = None,
        identity: tuple[str, str] | None = None,
        other: str | None = None,
        merge_id: str | None = None,
        actor: Actor | None = None,
    ) -> None:
        """One entry in each customer's log (a merge's in both records', each naming
        the other). Called after the change is made: a log never claims one that
        was not."""
        who = actor or ACTOR.get()
        if who is None:
            who = Actor(kind="channel", name=identity[0]) if identity else Actor(kind="system")
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in cids:
                others = [c for c in cids if c != cid]
                entry = _Stored(
                    at=iso(now_ms()) or "",
                    action=action,
                    customer_id=cid,
                    actor=who,
                    evidence=evidence,
                    request_id=_request_id(),
                    identity=AuditIdentity(*identity) if identity else None,
                    other_customer_id=others[0] if others else other,
                    merge_id=merge_id,
                )
                pipe.xadd(
                    keys.audit(cid),
                    {"a": msgspec.msgpack.encode(entry)},
                    maxlen=AUDIT_MAX,
                    approximate=True,
                )
            await pipe.execute()

    async def page(self, cid: str, *, limit: int, before: str | None) -> AuditPage:
        """Newest first. An id with no log and no record is unknown (NotFound upstream)."""
        if before is not None and not _is_entry(before):
            raise BadRequest("the cursor is not one this API issued", field="before")
        start = f"({before}" if before else "+"
        found: list[Any] = (
            await self.redis.xrevrange(keys.audit(cid), start, "-", count=limit + 1) or []
        )
        entries = [_entry(entry_id, fields) for entry_id, fields in found[:limit]]
        more = len(found) > limit
        return AuditPage(entries=entries, next_cursor=entries[-1].id if more else None)

    async def exists(self, cid: str) -> bool:
        return is_customer_id(cid) and bool(await self.redis.exists(keys.audit(cid)))

    async def merge_ids(self, cid: str) -> list[str]:
        """The merges the customer's log names (an erasure forgets their records)."""
        found: list[Any] = await self.redis.xrange(keys.audit(cid), "-", "+") or []
        ids = [_entry(entry_id, fields).merge_id for entry_id, fields in found]
        return sorted({merge_id for merge_id in ids if merge_id})

    async def scrub(self, cid: str) -> None:
        """Rewrite the log with ids only, each entry at its own position, in one
        transaction (one slot: the customer's). Running it again changes nothing."""
        key = keys.audit(cid)
        found: list[Any] = await self.redis.xrange(key, "-", "+") or []
        if not found:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            for entry_id, fields in found:
                stored = msgspec.msgpack.decode(as_bytes(fields[b"a"]), type=_Stored)
                scrubbed = msgspec.structs.replace(
                    stored,
                    actor=Actor(kind=stored.actor.kind, role=stored.actor.role),
                    evidence=None,
                    identity=AuditIdentity(stored.identity.channel) if stored.identity else None,
                    erased=True,
                )
                pipe.xadd(key, {"a": msgspec.msgpack.encode(scrubbed)}, id=entry_id)
            await pipe.execute()


def _is_entry(value: str) -> bool:
    ms, _, seq = value.partition("-")
    return ms.isdigit() and seq.isdigit() and len(value) <= 41


def _entry(entry_id: Any, fields: Any) -> AuditEntry:
    stored = msgspec.msgpack.decode(as_bytes(fields[b"a"]), type=_Stored)
    return AuditEntry(
        id=as_text(entry_id) or "",
        at=stored.at,
        action=stored.action,
        customer_id=stored.customer_id,
        actor=stored.actor,
        evidence=stored.evidence,
        request_id=stored.request_id,
        identity=stored.identity,
        other_customer_id=stored.other_customer_id,
        merge_id=stored.merge_id,
        erased=stored.erased,
    )
