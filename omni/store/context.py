"""The context read (`store.contexts`): a customer's whole context in one round trip.

It is one page read through the timeline room (the customer hash's fields and the
recent entries in one round trip, `Timeline.page`), decoded here: the hash's fields as
the customers and parts rooms write them (profile, identities, conversation, facts,
cart). It writes nothing.
"""

from __future__ import annotations

import msgspec

from omni import codec
from omni.clock import iso
from omni.continuity import continuity
from omni.errors import Moved, NotFound
from omni.ids import is_customer_id
from omni.model import (
    EMPTY_CART,
    RECENT_MESSAGES,
    Assignee,
    Cart,
    Context,
    Conversation,
    Customer,
    Fact,
    Identity,
    Pending,
    Profile,
)
from omni.store.entries import conversation_id, page_messages
from omni.store.reply import absorbed_ids, as_bytes, as_text
from omni.store.timeline import Timeline


def _of_conversation(value: object, number: int) -> tuple[str, str] | None:
    """(ms, who) from a "<conversation number>:<ms>:<who>" field (omni.handoff writes
    them), when it is about conversation `number` and not an earlier one."""
    parts = (as_text(value) or "").split(":")
    if len(parts) != 3 or parts[0] != str(number):
        return None
    return parts[1], parts[2]


class Contexts:
    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline

    async def read(self, cid: str, *, follow: bool = True) -> Context:
        """The customer's context; an absorbed id gives its survivor's (with `follow`)
        or raises Moved."""
        if not is_customer_id(cid):
            raise NotFound(f"no customer {cid}")
        held, found = await self.timeline.page(
            cid, start="+", count=RECENT_MESSAGES, channel=None, state=True
        )
        if not held:
            raise NotFound(f"no customer {cid}")
        fields = {as_bytes(k).decode(): v for k, v in held.items()}
        moved = as_text(fields.get("merged_into"))
        if moved:
            if not follow:
                raise Moved(cid, moved)
            return await self.read(moved)
        absorbed = absorbed_ids(fields.get("absorbed"))
        if absorbed:
            # The survivor's own recent entries are in hand: only the absorbed are read.
            rows = await self.timeline.interleaved(
                cid, found, absorbed, None, RECENT_MESSAGES, channel=None
            )
            recent = [message for _, message in rows[:RECENT_MESSAGES]]
        else:
            recent = page_messages(cid, found)
        recent.reverse()
        facts = {
            name[2:]: codec.decode(value, Fact)
            for name, value in sorted(fields.items())
            if name.startswith("f:")
        }
        pending = codec.decode(fields["cv_pending"], Pending) if "cv_pending" in fields else None
        counts = (int(fields.get("q_repeated", 0)), int(fields.get("q_answered", 0)))
        return Context(
            version=as_text(fields.get("rev")) or "0",
            customer=_customer(cid, fields),
            conversation=_conversation(cid, fields),
            facts=facts,
            cart=codec.decode(fields["cart"], Cart) if "cart" in fields else EMPTY_CART,
            recent_messages=recent,
            continuity=continuity(recent, facts, pending, as_text(fields.get("cv_topic")), counts),
        )


def _customer(cid: str, fields: dict[str, bytes]) -> Customer:
    return Customer(
        id=cid,
        profile=codec.decode(fields["p"], Profile) if "p" in fields else Profile(),
        identities=[
            codec.decode(value, Identity)
            for name, value in sorted(fields.items())
            if name.startswith("i:")
        ],
        first_seen=iso(fields.get("first_seen")),
        last_seen=iso(fields.get("last_seen")),
        last_channel=as_text(fields.get("last_channel")),
    )


def _conversation(cid: str, fields: dict[str, bytes]) -> Conversation:
    number = int(fields.get("cv_n", b"0"))
    channels = as_text(fields.get("cv_channels")) or ""
    assignee = fields.get("cv_assignee")
    holder = codec.decode(assignee, Assignee) if assignee else Assignee(kind="bot")
    if fields.get("ho_due"):
        holder = msgspec.structs.replace(holder, reply_due=iso(fields["ho_due"]))
    first = _of_conversation(fields.get("cv_first"), number)
    resolved = _of_conversation(fields.get("cv_resolved"), number)
    return Conversation(
        id=conversation_id(cid, number) if number else None,
        status=as_text(fields.get("cv_status")) or "open",  # type: ignore[arg-type]
        topic=as_text(fields.get("cv_topic")),
        assignee=holder,
        channels=[c for c in channels.split(",") if c],
        started_at=iso(fields.get("cv_started")),
        switched_at=iso(fields.get("cv_switched")),
        first_response_at=iso(first[0]) if first else None,
        first_response_by=first[1] if first else None,  # type: ignore[arg-type]
        resolved_at=iso(resolved[0]) if resolved else None,
        resolved_by=resolved[1] if resolved else None,  # type: ignore[arg-type]
    )
