"""Surveys in the channel the customer is on: CSAT (1-5) and CES (1-7) when a
conversation is resolved, NPS (0-10) on demand or on a schedule (`[surveys]`:
omni.survey_settings).

How a question looks is the channel's choice (`Channel.survey`, one line in its folder):
quick replies (Instagram), buttons (the web widget and the app: the same quick replies,
drawn as buttons), a numbered reply (SMS: "Reply with a number from 1 to 5"), or keypad
digits (voice: asked by the call's next <Gather>, only while the call is live; after the
call, voice is skipped and the timeline says so).

A customer has at most one open survey (`keys.survey`: id, kind, channel, expiry, what
it is about), so an answer on one channel closes it on all. An answer is recognised only
as an answer to that survey: a quick-reply payload carrying its id (`SURVEY:<id>:<n>`),
from any channel, or a bare number on the channel it was asked on while it is open (with
a comment after the number where `comment` is on). Anything else — out of range, no open
survey, a stale button, a number with words when no comment was invited — is a plain
message and goes to the bot as usual. An answer is recorded on the timeline as an event
(a system entry with the score, the channel, who resolved the conversation and how many
channels it crossed) and in the service report; the customer's own message is that
entry, so the bot is not woken by a survey answer (it asked nothing) and the answer does
not open a new conversation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog

from omni import keys, scripts
from omni.calls import live_call
from omni.clock import iso, now_ms
from omni.errors import Conflict, Moved, NotFound, ProblemError, ValidationFailed
from omni.ids import is_customer_id, ulid
from omni.live import Live
from omni.model import Author, InboundMessage, Message, OutboundRequest, Payload
from omni.replies import Replies
from omni.reports import Reports, Resolution, day_of
from omni.store import Store
from omni.survey_settings import LABELS, SCALES, Kind, SurveySettings

log = structlog.get_logger("omni.surveys")

SURVEY_AUTHOR = Author(kind="system", name="survey")
PAYLOAD_PREFIX = "SURVEY:"
_PAYLOAD = re.compile(r"^SURVEY:(svy_[0-9A-Za-z]{26}):(\d{1,2})$")
# A number, then (only where a comment is invited) words after it: "4", "4 quick and kind".
_NUMBER = re.compile(r"^\s*(\d{1,3})\s*[.!]?(?:\s*[-:,;)]?\s+(\S.*?))?\s*$", re.S)


@dataclass(frozen=True)
class Candidate:
    """An inbound message shaped like a survey answer (not yet known to be one)."""

    survey_id: str | None  # from a quick-reply payload; None for a typed number
    score: int
    comment: str | None


def candidate(inbound: InboundMessage) -> Candidate | None:
    """Pure: whether the message could be a survey answer at all (most are not, and
    cost nothing more)."""
    for picked in (inbound.quick_reply, inbound.postback):
        if picked is not None and picked.payload.startswith(PAYLOAD_PREFIX):
            match = _PAYLOAD.match(picked.payload)
            return Candidate(match[1], int(match[2]), None) if match else None
    text = inbound.text
    if text is None and inbound.voice is not None:
        text = inbound.voice.transcript
    match = _NUMBER.match(text or "")
    return Candidate(None, int(match[1]), match[2]) if match else None


class Asked(msgspec.Struct, frozen=True, omit_defaults=True):
    """`POST /v1/customers/{id}/surveys`'s answer: the survey now open."""

    id: str
    customer_id: str
    kind: str
    channel: str
    asked_at: str
    expires_at: str
    style: str
    scale: list[int]


class Surveys:
    def __init__(
        self,
        store: Store,
        replies: Replies,
        live: Live,
        reports: Reports,
        config: SurveySettings,
        styles: Mapping[str, str],
        choices: Mapping[str, int] | None = None,
    ) -> None:
        self.store = store
        self.replies = replies
        self.live = live
        self.reports = reports
        self.config = config
        self.styles = styles  # channel -> how it shows a question (Channel.survey)
        self.choices = dict(choices or {})  # channel -> Channel.survey_choices
        self._script = scripts.load(store.redis, "surveys")

    async def _run(self, cid: str, op: str, *args: Any) -> list[Any]:
        result: list[Any] = await self._script(
            keys=[keys.customer(cid), keys.survey(cid)], args=[op, now_ms(), *args]
        )
        if int(result[0]) == -2:
            raise NotFound(f"no customer {cid}")
        if int(result[0]) == -3:
            raise Moved(cid, _text(result[1]))
        return result

    # -- asking -----------------------------------------------------------------------

    async def on_resolved(self, done: Resolution) -> Asked | None:
        """Ask the resolution survey on the channel the customer is on; None when none
        is configured there, it was asked for this conversation already, or it cannot
        be asked (a call that is over). Never raises for the customer's channel state."""
        cid = done.customer_id
        channel = _text(await self.store.redis.hget(keys.customer(cid), "last_channel"))
        if not channel:
            return None
        kinds: list[Kind] = list(self.config.for_channel(channel).resolution)
        if self.config.nps_on_resolution and await self._nps_due(cid):
            kinds.append("nps")
        if not kinds:
            return None
        if self.styles.get(channel) == "digits" and await live_call(self.store, cid) is None:
            await self.store.timeline.record_event(
                cid, f"survey-skipped:{done.conversation}", self.config.not_in_call,
                {"kind": "survey", "skipped": "call ended", "channel": channel},
            )  # fmt: skip
            log.info("survey skipped: the call is over", customer_id=cid)
            return None
        about = {
            "conv": str(done.conversation),
            "agent": done.agent,
            "resolved_by": done.resolved_by,
            "crossed": str(len(done.channels)),
        }
        try:
            return await self._open(cid, kinds, channel, str(done.conversation), about)
        except ProblemError as exc:  # no identity to send to, a channel switched off
            log.info("survey not asked", customer_id=cid, reason=str(exc))
            return None

    async def ask(self, cid: str, kind: Kind, channel: str) -> Asked:
        """On demand (`POST /v1/customers/{id}/surveys`); `channel` "current" is the
        channel the customer last wrote on. NPS within the period: Conflict (409)."""
        if not is_customer_id(cid):
            raise NotFound(f"no customer {cid}")
        last, rev, moved = await self.store.redis.hmget(
            keys.customer(cid), ["last_channel", "rev", "merged_into"]
        )
        if rev is None:
            raise NotFound(f"no customer {cid}")
        if moved is not None:
            raise Moved(cid, _text(moved))
        if channel == "current":
            found = _text(last)
            if not found:
                raise ValidationFailed("the customer has no current channel", field="channel")
            channel = found
        if channel not in self.styles:
            raise ValidationFailed(f"unknown channel {channel!r}", field="channel")
        if self.styles[channel] == "digits" and await live_call(self.store, cid) is None:
            raise Conflict("the customer is not on a call: ask on another channel",
                           field="channel")  # fmt: skip
        asked = await self._open(cid, [kind], channel, "", {"agent": "", "crossed": "0"})
        assert asked is not None
        return asked

    async def _nps_due(self, cid: str) -> bool:
        last = await self.store.redis.hget(keys.customer(cid), "nps_at")
        return last is None or now_ms() - int(last) >= self._nps_period_ms()

    def _nps_period_ms(self) -> int:
        return self.config.nps_period_days * 86_400_000

    async def _open(
        self, cid: str, kinds: list[Kind], channel: str, conv: str, about: Mapping[str, str]
    ) -> Asked | None:
        survey_id = "svy_" + ulid()
        now = now_ms()
        expires = now + self.config.expire_after_s * 1000
        style = self.style(kinds[0], channel)
        comment = self.config.for_channel(channel).comment
        fields = {**about, "channel": channel, "steps": ",".join(kinds[1:]),
                  "day": day_of(now), "asked": str(now), "expires": str(expires),
                  "comment": "1" if comment else ""}  # fmt: skip
        period = self._nps_period_ms() if "nps" in kinds else 0
        pairs = [item for pair in fields.items() for item in pair]
        result = await self._run(cid, "open", survey_id, kinds[0], expires, conv, period, *pairs)
        code = int(result[0])
        if code == -1:
            return None
        if code == 0:
            allowed = int(result[1]) + self._nps_period_ms()
            raise Conflict(
                f"an NPS survey was asked at {iso(int(result[1]))}; at most one per "
                f"{self.config.nps_period_days} days ([surveys] nps_period_days)",
                next_allowed_at=iso(allowed),
            )
        await self._question(cid, survey_id, kinds[0], channel, about.get("agent", ""), now)
        lo, hi = SCALES[kinds[0]]
        asked = Asked(id=survey_id, customer_id=cid, kind=kinds[0], channel=channel,
                      asked_at=iso(now) or "", expires_at=iso(expires) or "", style=style,
                      scale=[lo, hi])  # fmt: skip
        await self.live.publish(cid, "survey", {"state": "asked", **msgspec.to_builtins(asked)})
        return asked

    def style(self, kind: str, channel: str) -> str:
        """How `channel` shows a `kind` question: its own style, or a numbered reply when
        the scale has more choices than its quick replies can carry."""
        style = self.styles.get(channel, "numbered")
        lo, hi = SCALES[kind]
        most = self.choices.get(channel)
        if style in ("quick_replies", "buttons") and most is not None and hi - lo + 1 > most:
            return "numbered"
        return style

    def question_text(self, kind: str, channel: str) -> str:
        """The question as the channel shows it (voice speaks it)."""
        lo, hi = SCALES[kind]
        text = self.config.questions[kind]
        style = self.style(kind, channel)
        if style == "numbered":
            text += f"\nReply with a number from {lo} to {hi}."
        elif style == "digits":
            text += f" Press a key from {lo} to {hi}." if hi < 10 else " Key in a number."
        if self.config.for_channel(channel).comment and style != "digits":
            text += " " + self.config.comment_prompt
        return text

    async def _question(
        self, cid: str, survey_id: str, kind: str, channel: str, agent: str, now: int
    ) -> None:
        style = self.style(kind, channel)
        await self.reports.survey_sent(cid, day_of(now), kind, channel, agent)
        if style == "digits":
            return  # the live call's next <Gather> asks it (adapters/voice)
        lo, hi = SCALES[kind]
        quick = []
        if style in ("quick_replies", "buttons"):
            quick = [
                Payload(payload=f"{PAYLOAD_PREFIX}{survey_id}:{n}", title=str(n))
                for n in range(lo, hi + 1)
            ]
        request = OutboundRequest(text=self.question_text(kind, channel), channel=channel,
                                  quick_replies=quick,
                                  client_message_id=f"{survey_id}:{kind}")  # fmt: skip
        await self.replies.send(cid, request, SURVEY_AUTHOR)

    async def open_survey(self, cid: str) -> dict[str, str]:
        """The customer's open survey as stored ({} when none)."""
        raw = await self.store.redis.hgetall(keys.survey(cid))
        return {_text(k): _text(v) for k, v in raw.items()}

    # -- answers ----------------------------------------------------------------------

    async def answer(self, inbound: InboundMessage) -> tuple[Message, bool] | None:
        """The timeline event recording `inbound` as the answer to the customer's open
        survey and whether it is new (False: a retried delivery), or None when it is not
        an answer (then it is a plain message)."""
        found = candidate(inbound)
        if found is None:
            return None
        cid = await self.store.customers.find(inbound.channel, inbound.external_id)
        if cid is None:
            return None
        key = f"survey:{inbound.channel}:{inbound.channel_message_id}"
        entry = await self.store.timeline.entry_of(cid, "system", key)
        if entry is not None:  # a retried delivery of an answer already recorded
            recorded = await self.store.timeline.message_at(cid, entry)
            return (recorded, False) if recorded is not None else None
        survey = await self.open_survey(cid)
        if not _answers(survey, found, inbound.channel):
            return None
        kind = survey["kind"]
        steps = [s for s in survey.get("steps", "").split(",") if s]
        upcoming = steps[0] if steps else ""
        if not int((await self._run(cid, "take", survey["id"], kind, upcoming,
                                    ",".join(steps[1:])))[0]):  # fmt: skip
            return None  # answered on another channel a moment ago
        return await self._record(cid, survey, found, inbound, key, upcoming), True

    async def _record(
        self,
        cid: str,
        survey: Mapping[str, str],
        found: Candidate,
        inbound: InboundMessage,
        key: str,
        upcoming: str,
    ) -> Message:
        kind, channel = survey["kind"], survey["channel"]
        lo, hi = SCALES[kind]
        crossed = int(survey.get("crossed") or 0)
        who = survey.get("agent") or ""
        said = f"{LABELS[kind]} {found.score}/{hi} on {inbound.channel}"
        if who:
            said += f" (resolved by {'the bot' if who == 'bot' else who}"
            said += f", {crossed} channel{'' if crossed == 1 else 's'})"
        if found.comment:
            said += f': "{found.comment}"'
        event = await self.store.timeline.record_event(cid, key, said, {
            "kind": "survey", "survey_id": survey["id"], "survey_kind": kind,
            "score": found.score, "scale_min": lo, "scale_max": hi, "comment": found.comment,
            "channel": inbound.channel, "asked_on": channel,
            "conversation": int(survey["conv"]) if survey.get("conv") else None,
            "resolved_by": survey.get("resolved_by"), "agent": who or None,
            "channels_crossed": crossed if who else None,
        })  # fmt: skip
        await self.reports.survey_answered(cid, survey["day"], kind, channel, who, found.score)
        await self.live.publish(cid, "survey", {"state": "answered", "id": survey["id"],
                                                "kind": kind, "score": found.score,
                                                "channel": inbound.channel,
                                                "comment": found.comment})  # fmt: skip
        if upcoming:
            await self._question(cid, survey["id"], upcoming, channel, who, now_ms())
        elif self.config.thanks and self.styles.get(inbound.channel) != "digits":
            thanks = OutboundRequest(text=self.config.thanks, channel=inbound.channel,
                                     client_message_id=f"{survey['id']}:thanks")  # fmt: skip
            try:
                await self.replies.send(cid, thanks, SURVEY_AUTHOR)
            except ProblemError as exc:
                log.info("survey thanks not sent", customer_id=cid, reason=str(exc))
        return event


def is_survey_answer(message: Message) -> bool:
    """Whether a message `Inbox.ingest` returned is a survey answer's timeline event."""
    return message.channel == "system" and message.metadata.get("kind") == "survey"


def _answers(survey: Mapping[str, str], found: Candidate, channel: str) -> bool:
    """Whether `found` answers the open `survey` (pure)."""
    if not survey.get("id") or int(survey.get("expires") or 0) <= now_ms():
        return False
    if found.survey_id is not None:
        if found.survey_id != survey["id"]:
            return False
    elif survey.get("channel") != channel:
        return False  # a bare number only where the survey was asked
    if found.comment and not survey.get("comment"):
        return False
    lo, hi = SCALES.get(survey.get("kind", ""), (1, 0))
    return lo <= found.score <= hi


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
