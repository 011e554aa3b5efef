"""Where every inbound channel event lands: messages are stored once, the channel's bot
is told about each new one (through the outbox), and live listeners hear of it; marks
(reactions, reads, deletions) annotate the message they point at."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec
import structlog

from omni.channel import ChannelEvent, Marked, Received
from omni.clock import iso, now_ms
from omni.handoff import Handoffs
from omni.identity import claim_verified_phone, note_typed_contacts, typed_contacts
from omni.ids import new_message_id
from omni.live import Live, ScriptedEvent
from omni.model import (
    Author,
    DeliveryState,
    Identity,
    InboundMessage,
    Message,
    MessageStatus,
    echo_fingerprint,
    message_from,
)
from omni.outbox import Outbox
from omni.phones import canonical_external_id
from omni.receipts import hold_early
from omni.reports import Reports
from omni.scripts import Batch
from omni.settings import BotSettings
from omni.store import Appended, Store
from omni.surveys import Surveys

log = structlog.get_logger("omni.inbox")


class Inbox:
    def __init__(
        self,
        store: Store,
        outbox: Outbox,
        live: Live,
        bots: Mapping[str, BotSettings],
        *,
        handoffs: Handoffs | None = None,
        phone_region: str | None = None,
        reports: Reports | None = None,
        surveys: Surveys | None = None,
    ) -> None:
        self.store = store
        self.reports = reports
        self.surveys = surveys
        self.phone_region = phone_region  # [identity] default_region (omni.phones)
        self.outbox = outbox
        self.live = live
        self.bots = bots
        self.handoffs = handoffs

    async def ingest(
        self, inbound: InboundMessage, *, notify_bot: bool = True
    ) -> tuple[Message, bool]:
        """Store once and tell listeners; `notify_bot=False` is for a channel that calls
        its bot itself while the customer waits (voice), so the bot is not called twice.
        A phone channel's number is stored in its canonical form (omni.phones)."""
        external_id = canonical_external_id(inbound.channel, inbound.external_id, self.phone_region)
        if external_id != inbound.external_id:
            inbound = msgspec.structs.replace(inbound, external_id=external_id)
        if self.surveys is not None and (answered := await self.surveys.answer(inbound)):
            # An answer to the open survey: recorded as the survey's timeline event, it
            # wakes no bot and opens no conversation (omni.surveys).
            return answered
        await claim_verified_phone(self.store, inbound.channel, inbound.external_id)
        contacts = typed_contacts(inbound.text, self.phone_region) if inbound.text else {}
        # The live event goes with the append (one round trip less) unless other writes
        # come before it: the contacts typed, the bot's outbox record (`_tell`).
        bot = notify_bot and inbound.channel in self.bots
        event = None if contacts or bot else self._event
        appended = await self.store.timeline.ingest(inbound, event=event)
        message, created = appended.message, appended.created
        if created:
            await note_typed_contacts(self.store, message, contacts)
            await self._tell(message, appended, notify_bot=notify_bot)
        return message, created

    def _event(self, message: Message) -> ScriptedEvent | None:
        """A new message's live event, as append.lua writes it (`_tell` stages it)."""
        return self.live.scripted(message.customer_id, "message", msgspec.to_builtins(message))

    async def receive(self, channel: str, events: Sequence[ChannelEvent]) -> list[Message]:
        """Apply a channel request's events in order; returns the messages stored (or
        found already stored) for them. Only returns once everything is stored."""
        stored = []
        for event in events:
            if isinstance(event, Received):
                if event.direction == "inbound":
                    message, _ = await self.ingest(event.message)
                else:
                    message = await self._echo(event.message)
                stored.append(message)
            elif isinstance(event, Marked):
                await self._mark(event)
            else:
                log.info("channel event skipped", channel=channel, reason=event.reason)
        return stored

    async def _tell(self, message: Message, appended: Appended, *, notify_bot: bool = True) -> None:
        """Listeners and the bot hear of a new message, in one round trip to Redis, with
        what else the message changed: the service report's journey counters and the
        customer's place in the team inbox (from the fields the append returned)."""
        handoff = appended.handoff
        held = await self.handoffs.on_inbound(message, handoff) if self.handoffs else None
        bot = notify_bot and message.channel in self.bots
        # The message as JSON builtins, for the event and the bot: neither, when the
        # script wrote the event and no bot is told (most web ingests).
        data = msgspec.to_builtins(message) if bot or not appended.told else None
        batch = Batch()
        # The customer's own keys first: a cluster's pipeline is written node by node in
        # the order its nodes first appear, and the bot's delivery record (the customer's
        # slot) must be on its way before its queue entry (another slot), which a worker
        # reads and then looks for the record.
        if not appended.told:  # else append.lua wrote it with the message
            self.live.stage(batch, message.customer_id, "message", data)
        if appended.journey is not None and self.reports is not None:
            step, conv, resolved = appended.journey
            self.reports.stage_journey(
                batch, message.customer_id, message.channel, step, conv, resolved, now_ms()
            )
        if bot:
            payload = {"bot": message.channel, "message": data}
            if held is not None:
                # An agent answers this customer: the bot hears of the message, not to
                # answer it (its replies to a handoff event are not sent).
                payload |= {"type": "handoff", "handoff": msgspec.to_builtins(held)}
            # The context is read when the bot is called, so the bot gets it fresh.
            self.outbox.stage_new(
                batch,
                "bot",
                payload,
                idempotency_key=f"bot:{message.id}",  # a new message: a new delivery
                customer_id=message.customer_id,
            )
        known = handoff if handoff is not None and len(handoff) >= 6 else None
        if known is not None:
            self.store.inbox.stage_sync(batch, message.customer_id, "inbound", known)
        if batch.size:
            await self.store.pipeliner.run(batch)
        if known is None:  # not what append.lua returns for a new message: read, then move
            await self.store.inbox.sync(message.customer_id, "inbound")

    async def _echo(self, inbound: InboundMessage) -> Message:
        """The channel's copy of a message sent from our side. Ours de-duplicates against
        the stored reply (its channel id was linked at delivery); one sent from the
        channel's own app by a person is stored as an agent's message."""
        cid, _ = await self.store.customers.resolve(inbound.channel, inbound.external_id)
        if (ours := await self._being_sent(cid, inbound)) is not None:
            return ours
        author_id = inbound.metadata.get("author_id")
        author = Author(kind="agent", id=str(author_id) if author_id else None)
        message = message_from(
            inbound, id=new_message_id(), customer_id=cid, direction="outbound", author=author
        )
        stored, _, created, *_ = await self.store.timeline.append(
            cid,
            message,
            identity=Identity(channel=inbound.channel, external_id=inbound.external_id),
            status=MessageStatus(state="delivered", at=iso(now_ms()) or ""),
        )
        if created:
            await self.live.publish(cid, "message", msgspec.to_builtins(stored))
            if self.handoffs is not None:
                await self.handoffs.on_reply(stored)
        return stored

    async def _being_sent(self, cid: str, inbound: InboundMessage) -> Message | None:
        """The reply an echo is, when it came before the send answered with its id (the
        echo's id then finds the reply too); None when the echo is not of one being sent."""
        assert inbound.channel_message_id is not None
        # An echo of a send that has answered finds no expectation (the send took it
        # away): the append below finds the reply by the id the send linked.
        fingerprint = echo_fingerprint(inbound.external_id, inbound.text, inbound.attachments)
        entry = await self.store.timeline.expected_echo(cid, inbound.channel, fingerprint)
        if entry is None:
            return None
        await self.store.timeline.link_channel_message(
            cid, inbound.channel, inbound.channel_message_id, entry
        )
        return await self.store.timeline.message_at(cid, entry)

    async def _mark(self, event: Marked) -> None:
        cid = await self.store.customers.find(event.channel, event.external_id)
        target = event.channel_message_id
        if cid is None or target is None or event.kind == "referral":
            log.info("mark not applied", channel=event.channel, kind=event.kind)
            return
        entry = await self.store.timeline.entry_of(cid, event.channel, target)
        if entry is None:
            if event.kind in ("delivered", "failed", "read"):
                # Perhaps before the send's own answer linked the id: kept for it (a read
                # says delivered), the same as Twilio's early receipts.
                state: DeliveryState = "failed" if event.kind == "failed" else "delivered"
                reason = event.detail.get("reason") if event.kind == "failed" else None
                await hold_early(
                    self.store, cid, event.channel, target, state, str(reason) if reason else None
                )
            log.info("mark for an unknown message", channel=event.channel, kind=event.kind)
            return
        at = event.at_ms or now_ms()
        if event.kind in ("sent", "delivered", "failed"):
            reason = event.detail.get("reason") if event.kind == "failed" else None
            await self._advance(cid, entry, event.kind, at, str(reason) if reason else None)
            return
        if event.kind == "read":  # read implies delivered (which may never be reported)
            await self._advance(cid, entry, "delivered", at, None)
        emoji = event.detail.get("emoji") or event.detail.get("reaction")
        await self.store.timeline.annotate(
            cid, entry, event.kind, at, str(emoji) if emoji else None
        )
        await self.live.publish(cid, f"message.{event.kind}", {"entry": entry, "at": iso(at)})

    async def _advance(
        self, cid: str, entry: str, state: DeliveryState, at: int, reason: str | None
    ) -> None:
        """A channel's report on a message we sent: its delivery status moves forward."""
        status = await self.store.timeline.advance_status(cid, entry, state, iso(at) or "", reason)
        if status is None:
            return
        message = await self.store.timeline.message_at(cid, entry)
        if message is not None:
            data = {"id": message.id, **msgspec.to_builtins(status)}
            await self.live.publish(cid, "message.status", data)
