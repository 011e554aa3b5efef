"""The core side of omni's own clients (web widget, mobile app): sessions and login,
messages in, catch-up, and presence. `adapters.web` and `adapters.mobile` route
to these with their channel's adapter (`adapters.chat.protocol` holds the protocol);
`adapters.chat.socket` holds the live socket both speak.

Login (a verified identify) makes the session's customer the one the brand's user id
belongs to: the customer holding `user:<id>` on this channel, else on the other
first-party channel (a user who logs in on the website and later in the app is one
customer: the brand's user ids are one namespace), else the anonymous visitor's own
customer, else a new one. The visitor's history joins that customer (see `_join`).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import structlog
from aiohttp import web
from msgspec import Meta

from adapters.chat.protocol import ClientChannel
from adapters.chat.sessions import USER_PREFIX, Session, Traits, decode_json
from omni import channel_http
from omni.clock import entry_ms
from omni.errors import BadRequest, Conflict, NotFound, PreconditionFailed
from omni.ids import Cursor, decode_cursor
from omni.links import LinkChannel, Redeem
from omni.merge import merge_customers
from omni.model import PAGE_MAX, IdentityLink, Message
from omni.phones import normalize_phone
from omni.state import SERVICES, SETTINGS, STORE
from omni.store import Store
from omni.web_io import json_response

log = structlog.get_logger("adapters.chat")

FIRST_PARTY = ("web", "mobile")
# A message id's time is when omni made it; its timeline entry's time is when Redis
# stored it. Finding a message by id searches this far either side, at most this many
# pages: a bounded cost whatever the history.
LOCATE_WINDOW_MS = 60_000
LOCATE_PAGES = 5
_CROCKFORD = {c: i for i, c in enumerate("0123456789ABCDEFGHJKMNPQRSTVWXYZ")}
_SEQ_MAX = 2**64 - 1


# -- what the routes answer (also their OpenAPI schemas) ---------------------------------


class SessionView(msgspec.Struct, frozen=True, omit_defaults=True):
    token: str
    visitor_id: str
    external_id: str
    expires_at: str
    user_id: str | None = None


class Ack(msgspec.Struct, frozen=True):
    client_msg_id: str
    id: str
    type: str = "ack"


class CatchUpPage(msgspec.Struct, frozen=True):
    messages: list[dict[str, Any]]
    next_after: str | None
    has_more: bool


# -- login ---------------------------------------------------------------------------------


async def exists(store: Store, cid: str) -> bool:
    try:
        await store.parts.revision(cid)
    except NotFound:
        return False
    return True


async def _known(store: Store, channel: str, external_id: str) -> str | None:
    for on in (channel, *(c for c in FIRST_PARTY if c != channel)):
        cid = await store.customers.find(on, external_id)
        if cid is not None and await exists(store, cid):
            return cid
    return None


# What a verified login proves (the audit log's evidence for what it joins).
_LOGIN_EVIDENCE = "a verified login: the user id's HMAC matched"


async def log_in(
    store: Store,
    channel: str,
    user_id: str,
    previous: Session | None,
    traits: Traits | None = None,
    *,
    phone_region: str | None = None,
) -> str:
    """Link a verified login (see the module docstring) and return the session's
    customer. Call only after the adapter verified the identifier's hash."""
    external_id = USER_PREFIX + user_id
    anonymous = await store.customers.find(channel, previous.external_id) if previous else None
    if anonymous is not None and not await exists(store, anonymous):
        anonymous = None
    cid = await _known(store, channel, external_id)
    if cid is None:
        cid = anonymous or await store.customers.ensure(channel, external_id)
    link = IdentityLink(channel=channel, external_id=external_id, verified=True)
    try:
        _, created = await store.customers.link_identity(cid, link)
        if created:
            await store.audit.record(
                [cid], "join", evidence=_LOGIN_EVIDENCE, identity=(channel, external_id)
            )
    except Conflict as taken:
        # Another login of the same user linked it a moment ago: that customer is theirs.
        cid = str(taken.extra["customer_id"])
    joined = anonymous if anonymous not in (None, cid) else None
    if joined is not None:
        await _join(store, survivor=cid, source=joined, identity=(channel, external_id))
    if traits is not None:
        await _fill_profile(store, cid, traits, phone_region)
    return cid


async def _join(store: Store, *, survivor: str, source: str, identity: tuple[str, str]) -> None:
    """The anonymous visitor's history joins the known customer's timeline. A merge
    that lost a race (the source merged elsewhere meanwhile) is left to that one."""
    try:
        await merge_customers(
            store, survivor, source, action="join", evidence=_LOGIN_EVIDENCE, identity=identity
        )
    except Conflict:
        log.info("anonymous customer already merged elsewhere", survivor=survivor)


async def _fill_profile(
    store: Store, cid: str, traits: Traits, phone_region: str | None = None
) -> None:
    """Traits are the client's unverified claims: they fill empty profile fields, never
    overwrite what an agent or a verified source set."""
    profile, rev = await store.customers.profile(cid)
    offered = {
        "name": traits.name,
        "email": traits.email,
        "phone": (
            normalize_phone(traits.phone, phone_region, locale=traits.locale or profile.locale)
            if traits.phone
            else None
        ),
        "locale": traits.locale,
    }
    fill = {k: v for k, v in offered.items() if v is not None and getattr(profile, k) is None}
    if not fill:
        return
    new = msgspec.structs.replace(profile, **fill)
    try:
        _, before = await store.customers.put_profile(cid, new, rev)
    except PreconditionFailed:
        return  # someone edited the profile this instant; theirs stands
    await store.search.index_profile(cid, before, new)


# -- routes --------------------------------------------------------------------------------


async def sessions(request: web.Request, channel: str) -> web.Response:
    """`POST /channels/<channel>/sessions`: start, renew or identify (a login links the
    customer before the new token is answered)."""
    adapter = channel_http.adapter(request, channel, ClientChannel)
    grant = adapter.session_request(await channel_http.inbound(request))
    if grant.kind == "identified" and grant.session.user_id is not None:
        store = request.app[STORE]
        region = request.app[SETTINGS].identity.default_region or None
        await log_in(
            store,
            channel,
            grant.session.user_id,
            grant.previous,
            grant.traits,
            phone_region=region,
        )
    view = msgspec.convert(grant.render(), SessionView)
    return json_response(view, status=grant.status)


async def post_message(request: web.Request, channel: str) -> web.Response:
    """`POST /channels/<channel>/messages`: stored once per client_msg_id (201 the first
    time, 200 with the same id for a retry), then the bot and live listeners hear of it."""
    adapter = channel_http.adapter(request, channel, ClientChannel)
    inbound = await channel_http.inbound(request)
    event = adapter.parse_message(inbound.body, adapter.authenticate(inbound))
    message, created = await request.app[SERVICES].inbox.ingest(event.message)
    ack = Ack(client_msg_id=event.message.channel_message_id, id=message.id)
    return json_response(ack, status=201 if created else 200)


class LinkBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    token: Annotated[str, Meta(min_length=1, max_length=512)]


async def present_link(request: web.Request, channel: str) -> web.Response:
    """`POST /channels/<channel>/link`: the client presents a link token (the one in the
    URL a bot sent) with its session, and the session's identity joins the token's
    customer (omni.links: forged 401, expired or used 410, nothing changed)."""
    adapter = channel_http.adapter(request, channel, ClientChannel)
    inbound = await channel_http.inbound(request)
    session = adapter.authenticate(inbound)
    body = decode_json(inbound.body, LinkBody)
    which: LinkChannel = "web" if channel == "web" else "mobile"
    redeem = Redeem(channel=which, external_id=session.external_id, token=body.token)
    return json_response(await request.app[SERVICES].links.redeem(redeem))


async def catch_up(request: web.Request, channel: str) -> web.Response:
    """`GET /channels/<channel>/messages?after=`: this channel's messages the client missed."""
    adapter = channel_http.adapter(request, channel, ClientChannel)
    query = adapter.parse_catch_up(await channel_http.inbound(request))
    store = request.app[STORE]
    cid = await store.customers.find(channel, query.session.external_id)
    if cid is None:
        page: list[Message] = []
        more = False
    else:
        start = await resolve_after(store, cid, channel, query.after)
        found, more = await store.timeline.read_after(cid, channel, after=start, limit=query.limit)
        page = [message for _, message in found]
    body = adapter.render_catch_up(page, after=query.after, has_more=more)
    return json_response(msgspec.convert(body, CatchUpPage))


# -- catch-up positions ----------------------------------------------------------------------


def ulid_ms(message_id: str) -> int | None:
    """The milliseconds a `msg_<ULID>` id was made at; None if it is not one."""
    prefix, _, ulid = message_id.partition("_")
    if prefix != "msg" or len(ulid) != 26:
        return None
    value = 0
    for char in ulid[:10]:
        digit = _CROCKFORD.get(char)
        if digit is None:
            return None
        value = value * 32 + digit
    return value


async def resolve_after(store: Store, cid: str, channel: str, after: str | None) -> Cursor | None:
    """The position a catch-up starts after: `after` is a message id a client was sent
    (found near the time its id carries), or a history cursor."""
    if after is None:
        return None
    ms = ulid_ms(after)
    if ms is None:
        try:
            return decode_cursor(after)
        except BadRequest:
            raise BadRequest(
                "after must be a message id or a next_after this API sent", field="after"
            ) from None
    found = await locate(store, cid, channel, after, ms)
    # A message that is not on this channel's timeline (yet, or any more): resume from
    # its time, so the client misses nothing after it.
    return found or (f"{max(ms - 1, 0)}-{_SEQ_MAX}", None)


async def locate(store: Store, cid: str, channel: str, message_id: str, ms: int) -> Cursor | None:
    """The position of a message on the channel's timeline, searched near its id's time."""
    start: Cursor = (f"{max(ms - LOCATE_WINDOW_MS, 0)}-0", None)
    for _ in range(LOCATE_PAGES):
        page, more = await store.timeline.read_after(cid, channel, after=start, limit=PAGE_MAX)
        for position, message in page:
            if message.id == message_id:
                return position
            if entry_ms(position[0]) > ms + LOCATE_WINDOW_MS:
                return None
        if not more:
            return None
        start = page[-1][0]
    return None
