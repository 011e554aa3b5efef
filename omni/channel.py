"""The core's seam with the channels: what every channel folder (`adapters/<name>/`)
implements and exports, in the core's own vocabulary, so the core imports no channel.

An adapter turns a channel's inbound request into canonical events, and a canonical
outbound message into the channel's own request. It never touches Redis: the core owns
storage, identity and dispatch. A channel folder exports one `Channel` (its name, its
routes, and `setup`, which builds its adapter and sender from the settings); the
registry (`adapters.registry:CHANNELS` unless told otherwise) lists them, and the core
loads it by name (`load`) where the application or the worker is built.

Inbound, a request becomes a list of `ChannelEvent`s:

    Received   a message to put on the timeline (inbound from the customer, or
               outbound: the channel echoing a message we sent)
    Marked     something that happened to an earlier message or the conversation:
               read, sent, delivered or failed (a failure's detail "reason" says why),
               a reaction or its removal, deletion (unsend)
    Skipped    an event the adapter understood but that stores nothing, with a reason
               the core logs (a test webhook, an unknown event kind)
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import aiohttp

from omni.errors import ConfigError
from omni.model import InboundMessage, Message
from omni.route import Route
from omni.settings import Settings
from omni.store import Store

# Where the channels are listed unless the caller passes them (errbot-style: the core
# chooses the registry by name and imports no channel itself).
REGISTRY = "adapters.registry:CHANNELS"


@dataclass(frozen=True)
class InboundRequest:
    """What the core hands an adapter: raw bytes (signatures cover them), headers, the
    URL the channel called (its public form, for schemes that sign the URL), and the
    query string parameters."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, whatever its case: `InboundRequest.headers` may be a plain dict."""
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    return value


@dataclass(frozen=True)
class Received:
    """A message for the timeline. `message.external_id` is always the customer's id
    on the channel, also for an echo of our own send (direction "outbound")."""

    message: InboundMessage
    direction: Literal["inbound", "outbound"] = "inbound"


MarkKind = Literal[
    "read", "sent", "delivered", "failed", "reaction", "unreaction", "deleted", "referral"
]


@dataclass(frozen=True)
class Marked:
    channel: str
    external_id: str
    kind: MarkKind
    channel_message_id: str | None = None
    at_ms: int | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    reason: str


ChannelEvent = Received | Marked | Skipped


@dataclass(frozen=True)
class Delivery:
    """The outcome of one outbound delivery attempt."""

    status: Literal["sent", "delivered", "failed"]
    channel_message_id: str | None = None
    reason: str | None = None
    retry: bool = False  # a failure worth another attempt (rate limit, 5xx, timeout)


@dataclass(frozen=True)
class OutboundRequest:
    """One HTTP request to a provider, as a channel's protocol renders it (the body
    already encoded); the channel's sender sends it (`omni.channel_client.send`)."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderAnswer:
    """The provider's HTTP answer to an `OutboundRequest`, for the protocol to read into
    a `Delivery` (headers case-insensitive, as HTTP has them)."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON; None when it is empty or not JSON (a proxy's error page)."""
        return answer_json(self.body)


def answer_json(body: bytes) -> Any:
    """A provider's answer body as JSON, None when it is empty or not JSON: what it
    means is the protocol's to say, never an exception in the sender."""
    try:
        return json.loads(body) if body else None
    except (ValueError, RecursionError):
        return None


class Adapter(Protocol):
    """What the core holds of a configured channel (`Channel.setup`) and hands back to
    the channel's routes. Sending is the sender's (`Sender`), not the adapter's."""

    @property
    def channel(self) -> str: ...

    def verify(self, request: InboundRequest) -> None:
        """Raise `omni.errors.Unauthenticated` unless the request is the channel's own."""

    def parse(self, request: InboundRequest) -> Sequence[ChannelEvent]:
        """Every event in the request (a webhook may batch several). Raise
        `omni.errors.BadRequest` for a body that cannot be read; never anything else."""


# How a channel shows a survey question (omni.surveys): quick replies, buttons (quick
# replies drawn as buttons by omni's own clients), keypad digits in a live call, or a
# numbered reply written out.
SurveyStyle = Literal["quick_replies", "buttons", "digits", "numbered"]

# What a channel gives the worker to send one message to one recipient on it.
Sender = Callable[[Message, str], Awaitable[Delivery]]


@dataclass(frozen=True)
class Channel:
    """What a channel folder exports as `CHANNEL`.

    `setup` returns the configured adapter (None when the channel is not configured: its
    routes then answer 404) and the worker's sender for replies on it (None: replies on
    the channel are not sent). `config` parses the channel's settings section, raising
    `ConfigError` naming the setting, so a bad one stops `omni serve` at start-up.
    `echoes`: the channel sends our own sends back to its webhook. `survey`: how it shows
    a survey question (`SurveyStyle`); `survey_choices`: the most quick replies it shows
    at once (WhatsApp's list: 10), a scale with more (NPS, 0-10) is asked as a numbered
    reply instead (None: no limit a survey reaches)."""

    name: str
    routes: tuple[Route, ...]
    setup: Callable[[Settings, aiohttp.ClientSession, Store], tuple[Adapter | None, Sender | None]]
    echoes: bool = False
    config: Callable[[Settings], object] | None = None
    survey: SurveyStyle = "numbered"
    survey_choices: int | None = None


def load(name: str = REGISTRY) -> tuple[Channel, ...]:
    """The channels listed at `name` ("package.module:ATTRIBUTE")."""
    module_name, _, attribute = name.partition(":")
    try:
        channels = getattr(importlib.import_module(module_name), attribute or "CHANNELS")
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"channels: cannot load the channel registry {name!r}: {exc}") from None
    return tuple(channels)


def validate(settings: Settings, channels: Sequence[Channel]) -> None:
    """Parse every channel's settings section: a bad setting raises `ConfigError`."""
    for channel in channels:
        if channel.config is not None:
            channel.config(settings)
