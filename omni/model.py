"""The canonical model: what every channel's messages and a customer's context become.

These are frozen msgspec Structs: the HTTP API decodes requests straight into them (with
field paths in validation errors), the OpenAPI document takes their JSON Schema, and
`omni.codec` stores them as msgpack. Limits that a client can hit are `Meta` constraints
here, so the schema, the validation and the documentation say the same thing.

Over 400 lines on purpose: it is the one vocabulary (about forty small Structs and the
limits they share), read as a glossary; split by topic, the limits and the types that
nest one another (Message in Context, Attachment in Message) would be spread over files.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

# Documented limits (README "Limits"): a client that exceeds one gets 422 naming the field.
TEXT_MAX = 4096
ATTACHMENTS_MAX = 10
METADATA_MAX = 32
FACTS_PER_PATCH_MAX = 50
FACT_VALUE_MAX_BYTES = 2048
CART_ITEMS_MAX = 100
PAGE_MAX = 200
PAGE_DEFAULT = 50
RECENT_MESSAGES = 20

Direction = Literal["inbound", "outbound"]
# A language tag as apps and browsers send it (en-US, pt_BR).
Locale = Annotated[str, Meta(max_length=35, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]+)*$")]
AuthorKind = Literal["customer", "bot", "agent", "system"]
AttachmentType = Literal[
    "image", "video", "audio", "file", "location", "product", "story_reply", "story_mention",
    "reel", "sticker", "other",
]  # fmt: skip
ConversationStatus = Literal["open", "pending", "resolved"]
CartStage = Literal["browsing", "cart", "checkout", "payment", "placed"]

ShortStr = Annotated[str, Meta(min_length=1, max_length=256)]
Url = Annotated[str, Meta(min_length=1, max_length=2048, pattern=r"^(https?|data):")]
Currency = Annotated[str, Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]
MetaValue = str | int | float | bool | None


class Author(Struct, frozen=True, omit_defaults=True):
    kind: AuthorKind
    id: Annotated[str, Meta(max_length=256)] | None = None
    name: Annotated[str, Meta(max_length=256)] | None = None


class Product(Struct, frozen=True, omit_defaults=True):
    id: ShortStr
    name: Annotated[str, Meta(max_length=512)] | None = None
    url: Url | None = None
    price: Annotated[int, Meta(ge=0, description="minor units")] | None = None
    currency: Currency | None = None


class Attachment(Struct, frozen=True, omit_defaults=True):
    type: AttachmentType
    url: Url | None = None
    mime: Annotated[str, Meta(max_length=128)] | None = None
    size: Annotated[int, Meta(ge=0)] | None = None
    name: Annotated[str, Meta(max_length=512)] | None = None
    latitude: Annotated[float, Meta(ge=-90, le=90)] | None = None
    longitude: Annotated[float, Meta(ge=-180, le=180)] | None = None
    product: Product | None = None


class Payload(Struct, frozen=True, omit_defaults=True):
    """A quick-reply or postback: the machine payload and the title the customer saw."""

    payload: Annotated[str, Meta(max_length=1024)]
    title: Annotated[str, Meta(max_length=256)] | None = None


class Voice(Struct, frozen=True, omit_defaults=True):
    call_id: ShortStr
    transcript: Annotated[str, Meta(max_length=TEXT_MAX)] | None = None
    confidence: Annotated[float, Meta(ge=0, le=1)] | None = None
    digits: Annotated[str, Meta(max_length=64, pattern=r"^[0-9*#w]*$")] | None = None


Metadata = Annotated[
    dict[Annotated[str, Meta(max_length=64)], MetaValue], Meta(max_length=METADATA_MAX)
]


DeliveryState = Literal["queued", "sent", "delivered", "failed"]


class MessageStatus(Struct, frozen=True, omit_defaults=True):
    """Where an outbound message is on its way to the customer."""

    state: DeliveryState
    at: str
    reason: str | None = None
    attempts: int = 0
    channel_message_id: str | None = None  # the provider's id for what it accepted


class Message(Struct, frozen=True, omit_defaults=True):
    """One message on the timeline, whatever its channel (DESIGN.md: canonical message).

    `status`, `deleted_at`, `reaction` and `read_at` are what happened to the message
    after it was stored (annotations): they are read beside it, never stored in it.
    """

    id: str
    customer_id: str
    conversation_id: str
    channel: str
    direction: Direction
    author: Author
    received_at: str
    channel_message_id: str | None = None
    sent_at: str | None = None
    text: str | None = None
    attachments: list[Attachment] = []
    quick_reply: Payload | None = None
    postback: Payload | None = None
    quick_replies: list[Payload] = []  # offered to the customer with an outbound message
    voice: Voice | None = None
    reply_to: str | None = None
    metadata: dict[str, MetaValue] = {}
    status: MessageStatus | None = None
    deleted_at: str | None = None
    reaction: str | None = None
    read_at: str | None = None


class TypingRequest(Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/customers/{id}/typing`: a bot or an agent starts or stops writing."""

    state: Literal["start", "stop"]
    channel: (
        Annotated[str, Meta(min_length=1, max_length=32, description="default: every chat")] | None
    ) = None


class OutboundRequest(Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/customers/{id}/messages`: a reply from a bot or an agent."""

    text: Annotated[str, Meta(min_length=1, max_length=TEXT_MAX)] | None = None
    channel: (
        Annotated[
            str, Meta(min_length=1, max_length=32, description="default: the customer's last")
        ]
        | None
    ) = None
    attachments: Annotated[list[Attachment], Meta(max_length=ATTACHMENTS_MAX)] = []
    quick_replies: Annotated[list[Payload], Meta(max_length=13)] = []
    client_message_id: (
        Annotated[str, Meta(min_length=1, max_length=128, description="repeats send once")] | None
    ) = None


class InboundMessage(Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/messages`: a message from a channel omni has no adapter for."""

    channel: Annotated[str, Meta(min_length=1, max_length=32)]
    external_id: Annotated[
        str, Meta(min_length=1, max_length=256, description="the customer's id on the channel")
    ]
    channel_message_id: Annotated[
        str,
        Meta(min_length=1, max_length=512, description="the channel's id; repeats store once"),
    ]
    text: Annotated[str, Meta(max_length=TEXT_MAX)] | None = None
    sent_at: Annotated[str, Meta(pattern=r"^\d{4}-\d\d-\d\dT")] | None = None
    author_name: Annotated[str, Meta(max_length=256)] | None = None
    attachments: Annotated[list[Attachment], Meta(max_length=ATTACHMENTS_MAX)] = []
    quick_reply: Payload | None = None
    postback: Payload | None = None
    voice: Voice | None = None
    reply_to: Annotated[str, Meta(max_length=512)] | None = None
    metadata: Metadata = {}


class Identity(Struct, frozen=True):
    """A channel identity; `verified` is always shown, false included."""

    channel: str
    external_id: str
    verified: bool = False
    linked_at: str | None = None


class Profile(Struct, frozen=True):
    """Every field is always shown (null when unknown), the verified flags included."""

    name: str | None = None
    email: str | None = None
    email_verified: bool = False
    phone: str | None = None
    phone_verified: bool = False
    locale: str | None = None


class Customer(Struct, frozen=True):
    id: str
    profile: Profile
    identities: list[Identity]
    first_seen: str | None
    last_seen: str | None
    last_channel: str | None


class Assignee(Struct, frozen=True, omit_defaults=True):
    """Who answers the customer: the bot, an agent (`id`), or the agents' queue (kind
    agent, no id: the conversation waits for one, status pending)."""

    kind: Literal["bot", "agent"]
    id: str | None = None
    since: str | None = None  # when it took the conversation
    reason: str | None = None  # why it was handed over
    reply_due: str | None = None  # the agent must answer by then, or it goes back to the queue


Responder = Literal["bot", "agent"]


class Conversation(Struct, frozen=True):
    id: str | None
    status: ConversationStatus
    topic: str | None
    assignee: Assignee
    channels: list[str]
    started_at: str | None
    switched_at: str | None
    # The service measures of this conversation: when it was first answered and by
    # whom, and who resolved it ("bot" when no agent took part in it).
    first_response_at: str | None = None
    first_response_by: Responder | None = None
    resolved_at: str | None = None
    resolved_by: Responder | None = None


class HandoffRequest(Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/customers/{id}/handoff`: who answers the customer from now on.

    `{"to": "agent"}` from a bot puts the conversation in the agents' queue (or with
    `agent_id`, with that agent); from an agent it takes the conversation over
    (`agent_id` defaults to the caller). `{"to": "bot"}` hands it back (agents only).
    """

    to: Literal["agent", "bot"]
    agent_id: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    reason: Annotated[str, Meta(min_length=1, max_length=512)] | None = None


class ResolveRequest(Struct, frozen=True, forbid_unknown_fields=True):
    """`POST /v1/customers/{id}/resolve`: the conversation is done; the next message
    from the customer starts a new one."""

    reason: Annotated[str, Meta(min_length=1, max_length=512)] | None = None


class Pending(Struct, frozen=True):
    """The question a bot is waiting on: the fact it wants and how it asked."""

    fact: str
    prompt: str | None
    asked_at: str
    channel: str | None  # where it was asked


class PendingInput(Struct, frozen=True, forbid_unknown_fields=True):
    fact: Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")]
    prompt: Annotated[str, Meta(max_length=1000)] | None = None
    channel: Annotated[str, Meta(min_length=1, max_length=32)] | None = None


class ConversationPatch(Struct, frozen=True, forbid_unknown_fields=True):
    """`PATCH /v1/customers/{id}/conversation`: set (or clear, with null) the question
    the bot is waiting on and the topic. An absent field is left as it is."""

    pending: PendingInput | msgspec.UnsetType | None = msgspec.UNSET
    topic: Annotated[str, Meta(max_length=200)] | msgspec.UnsetType | None = msgspec.UNSET


class Continuity(Struct, frozen=True):
    """What the next channel's bot needs to pick up where the last one left off."""

    came_from: str | None  # the channel the customer used before the current one
    came_at: str | None  # when they were last there
    current_channel: str | None
    topic: str | None  # set by a bot, or the customer's last words
    pending: Pending | None
    answered: Fact | None  # the pending question's answer, when omni already has it
    resume_hint: str | None
    # "The customer did not have to repeat themselves", counted: questions a bot set
    # pending although omni knew the answer, and asks (?ask=) omni answered instead.
    repeated_questions: int = 0
    answered_for_bot: int = 0


class Known(Struct, frozen=True):
    """`?ask=`: a fact the bot asked about, with what omni knows of it."""

    value: Any
    source: FactSource
    at: str


class FactSource(Struct, frozen=True, omit_defaults=True):
    channel: Annotated[str, Meta(max_length=32)] | None = None
    message_id: Annotated[str, Meta(max_length=512)] | None = None


class Fact(Struct, frozen=True):
    """A stored fact; confidence and source are always shown, defaults included."""

    value: Any
    at: str
    confidence: float = 1.0
    source: FactSource = FactSource()


class FactInput(Struct, frozen=True, forbid_unknown_fields=True):
    value: Any
    confidence: Annotated[float, Meta(ge=0, le=1)] = 1.0
    source: FactSource = FactSource()


FactKey = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.]*$")]


class FactsPatch(Struct, frozen=True, forbid_unknown_fields=True):
    """Set facts (an object) or clear them (null), RFC 7396 merge-patch style."""

    facts: Annotated[dict[FactKey, FactInput | None], Meta(min_length=1, max_length=50)]


class CartItem(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    sku: ShortStr
    quantity: Annotated[int, Meta(ge=1, le=10_000)]
    unit_price: Annotated[int, Meta(ge=0, description="minor units, e.g. cents")]
    currency: Currency
    name: Annotated[str, Meta(max_length=512)] | None = None


class CartInput(Struct, frozen=True, forbid_unknown_fields=True):
    items: Annotated[list[CartItem], Meta(max_length=CART_ITEMS_MAX)] = []
    stage: CartStage = "browsing"
    order_id: Annotated[str, Meta(min_length=1, max_length=128)] | None = None


class CartTotals(Struct, frozen=True):
    item_count: int
    subtotal: int


class Cart(Struct, frozen=True):
    items: list[CartItem]
    stage: CartStage
    currency: str | None
    totals: CartTotals
    order_id: str | None
    updated_at: str | None
    updated_by: str | None


class Context(Struct, frozen=True, omit_defaults=True):
    """What a bot gets in one call (DESIGN.md: customer context)."""

    version: str
    customer: Customer
    conversation: Conversation
    facts: dict[str, Fact]
    cart: Cart
    recent_messages: list[Message]
    continuity: Continuity | None = None
    known: dict[str, Known | None] | None = None  # only with ?ask=: null = not known


class IdentityLink(Struct, frozen=True, forbid_unknown_fields=True):
    channel: Annotated[str, Meta(min_length=1, max_length=32)]
    external_id: Annotated[str, Meta(min_length=1, max_length=256)]
    verified: bool = True


class ProfilePatch(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    name: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    email: Annotated[str, Meta(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] | None = None
    email_verified: bool | None = None
    phone: Annotated[str, Meta(max_length=32)] | None = None
    phone_verified: bool | None = None
    locale: (
        Annotated[str, Meta(max_length=35, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]+)*$")] | None
    ) = None


class HistoryPage(Struct, frozen=True):
    messages: list[Message]
    next_cursor: str | None


class CustomerSummary(Struct, frozen=True):
    id: str
    profile: Profile
    identities: list[Identity]
    last_seen: str | None
    last_channel: str | None


class SearchResult(Struct, frozen=True):
    customers: list[CustomerSummary]


class IngestResult(Struct, frozen=True):
    message: Message
    created: bool


def echo_fingerprint(recipient: str, text: str | None, attachments: list[Attachment]) -> str:
    """What a channel's echo of a send has in common with the message sent: its
    recipient, its text and its kinds of attachment (the echo's URLs are the channel's)."""
    seen = "\0".join([recipient, text or "", *(a.type for a in attachments)])
    return hashlib.blake2b(seen.encode(), digest_size=12).hexdigest()


def message_from(
    inbound: InboundMessage, *, id: str, customer_id: str, direction: Direction, author: Author
) -> Message:
    """The canonical message for what a channel sent; the store fills in the
    conversation and the time it was received."""
    return Message(
        id=id,
        customer_id=customer_id,
        conversation_id="",
        channel=inbound.channel,
        direction=direction,
        author=author,
        received_at="",
        channel_message_id=inbound.channel_message_id,
        sent_at=inbound.sent_at,
        text=inbound.text,
        attachments=inbound.attachments,
        quick_reply=inbound.quick_reply,
        postback=inbound.postback,
        voice=inbound.voice,
        reply_to=inbound.reply_to,
        metadata=inbound.metadata,
    )


def cart_of(data: CartInput, *, updated_at: str, updated_by: str) -> Cart:
    """Compute the stored cart (totals, currency) from what a client PUT."""
    currencies = {item.currency for item in data.items}
    return Cart(
        items=data.items,
        stage=data.stage,
        currency=next(iter(currencies)) if len(currencies) == 1 else None,
        totals=CartTotals(
            item_count=sum(i.quantity for i in data.items),
            subtotal=sum(i.quantity * i.unit_price for i in data.items),
        ),
        order_id=data.order_id,
        updated_at=updated_at,
        updated_by=updated_by,
    )


EMPTY_CART = Cart(
    items=[],
    stage="browsing",
    currency=None,
    totals=CartTotals(item_count=0, subtotal=0),
    order_id=None,
    updated_at=None,
    updated_by=None,
)


def json_size(value: Any) -> int:
    return len(msgspec.json.encode(value))
