"""The continuity block of a context: where the customer came from, what it was about,
the question a bot was waiting on (and its answer, if a fact now holds it), and a
one-line hint the next channel's bot can open with instead of asking again.

Pure functions of what a context read already holds: no extra Redis calls."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime

from omni.model import Continuity, Fact, Message, Pending

TOPIC_MAX = 80
# Facts a person would recognise a conversation by, most telling first.
_SALIENT = ("order_id", "booking_id", "ticket_id", "product", "sku", "issue")


def _ago(at: str | None, now_s: float) -> str:
    if not at:
        return ""
    seconds = now_s - datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
    if seconds < 90:
        return "just now"
    if seconds < 5400:
        return f"{round(seconds / 60)} min ago"
    if seconds < 129600:
        return f"{round(seconds / 3600)} h ago"
    return f"{round(seconds / 86400)} days ago"


def _said(message: Message) -> str | None:
    text = (message.text or "").strip()
    if not text and message.voice is not None:
        text = (message.voice.transcript or "").strip()
    if not text:
        return None
    return text if len(text) <= TOPIC_MAX else text[: TOPIC_MAX - 1] + "…"


def continuity(
    recent: Sequence[Message],
    facts: Mapping[str, Fact],
    pending: Pending | None,
    topic: str | None,
    counts: tuple[int, int] = (0, 0),
    now_s: float | None = None,
) -> Continuity:
    """`recent` oldest first, as a context holds it."""
    now_s = time.time() if now_s is None else now_s
    inbound = [m for m in recent if m.direction == "inbound"]
    current = inbound[-1].channel if inbound else None
    came_from = came_at = None
    for message in reversed(inbound):
        if message.channel != current:
            came_from, came_at = message.channel, message.received_at
            break
    last_words = next((s for m in reversed(inbound) if (s := _said(m))), None)
    topic = topic or last_words
    answered = facts.get(pending.fact) if pending is not None else None
    return Continuity(
        came_from=came_from,
        came_at=came_at,
        current_channel=current,
        topic=topic,
        pending=pending,
        answered=answered,
        resume_hint=_hint(came_from, came_at, topic, facts, pending, answered, now_s),
        repeated_questions=counts[0],
        answered_for_bot=counts[1],
    )


def _hint(
    came_from: str | None,
    came_at: str | None,
    topic: str | None,
    facts: Mapping[str, Fact],
    pending: Pending | None,
    answered: Fact | None,
    now_s: float,
) -> str | None:
    parts = []
    if came_from:
        parts.append(f"Continuing from {came_from} ({_ago(came_at, now_s)})")
    salient = next((name for name in _SALIENT if name in facts), None)
    if salient is not None:
        label = salient.removesuffix("_id").replace("_", " ")
        parts.append(f"about {label} {facts[salient].value}")
    elif topic:
        parts.append(f'last said: "{topic}"')
    if pending is not None and answered is not None:
        parts.append(f"{pending.fact} is already known: {answered.value} — no need to ask")
    elif pending is not None:
        asked = f' ("{pending.prompt}")' if pending.prompt else ""
        parts.append(f"waiting for {pending.fact}{asked}")
    if not parts:
        return None
    hint = "; ".join(parts)
    return hint[0].upper() + hint[1:] + "."
