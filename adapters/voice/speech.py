"""What omni says on a call: the greeting (which remembers the customer's last conversation
on any channel) and the line recorded on the timeline when a call ends."""

from __future__ import annotations

from adapters.voice.config import NAME
from adapters.voice.protocol import CallWebhook
from omni.model import Context

# What omni says on its own. Short: every word is read aloud to someone waiting.
HELLO = "Hello, thanks for calling. How can I help you today?"
NO_BOT = "Thank you, I have noted that for our team. Is there anything else I can help with?"
BOT_FAILED = "Sorry, I could not get you an answer just now. Could you say that again?"
LISTENING = "Is there anything else I can help you with?"
REPEAT = "Sorry, could you say that again?"
REPROMPT = "Sorry, I did not catch that. How can I help you?"
GOODBYE = "Thank you for calling. Goodbye."
CONNECTING = "Connecting you to an agent. Please hold."
NO_AGENT = "Sorry, no one is available to take your call right now. I can keep helping you."
AGENT_MISSED = "Sorry, no one could take your call. I can keep helping you. What do you need?"
HELD = "Connecting you to the agent looking after your conversation. Please hold."
HELD_NO_NUMBER = "An agent is looking after your conversation and will get back to you shortly."
LINKED = "Thank you, this number is now linked to your account. How can I help you?"
AGENT_MISSED_BYE = "Sorry, no one could take your call. Please call again later. Goodbye."

_CHANNEL_NAMES = {
    "web": "our website chat",
    "mobile": "our app",
    "instagram": "Instagram",
    "voice": "the phone",
    "whatsapp": "WhatsApp",
    "sms": "text message",
    "email": "email",
}
_QUOTE_MAX = 120


# -- what omni says -------------------------------------------------------------------


def greeting(context: Context | None) -> str:
    """The first thing a caller hears: by name when omni knows them, then what they were
    last about (an order, the topic, or their last message and where they wrote it)."""
    if context is None:
        return HELLO
    name = (context.customer.profile.name or "").split()
    hello = f"Hi {name[0]}, welcome back." if name else "Welcome back."
    about = _last_about(context)
    return f"{hello} {about or 'How can I help you today?'}"


def _last_about(context: Context) -> str | None:
    order = context.cart.order_id or _fact(context, "order_id")
    if order:
        return f"Are you calling about order {order}?"
    if context.conversation.topic:
        return f"Are you calling about {context.conversation.topic}?"
    for message in reversed(context.recent_messages):
        if message.direction == "inbound" and message.author.kind == "customer" and message.text:
            where = _CHANNEL_NAMES.get(message.channel, message.channel)
            verb = "said" if message.channel == NAME else "wrote"
            quote = _clip(message.text)
            return f"Last time, on {where}, you {verb}: {quote}. Is that why you are calling?"
    last = context.customer.last_channel
    if last and last != NAME:
        where = _CHANNEL_NAMES.get(last, last)
        return f"I see you were with us on {where}. How can I help you today?"
    return None


def _fact(context: Context, name: str) -> str | None:
    fact = context.facts.get(name)
    return str(fact.value) if fact is not None and fact.value not in (None, "") else None


def _clip(text: str) -> str:
    text = " ".join(text.split()).rstrip(".!?;:, ")
    if len(text) <= _QUOTE_MAX:
        return text
    return text[:_QUOTE_MAX].rsplit(" ", 1)[0] + "…"


def call_ended(hook: CallWebhook) -> str:
    """The call's end as an agent reads it in the history."""
    if hook.duration_s is None:
        return f"Call ended: {hook.status}"
    minutes, seconds = divmod(hook.duration_s, 60)
    took = f"{minutes} min {seconds} s" if minutes else f"{seconds} s"
    return f"Call ended: {hook.status}, {took}"
