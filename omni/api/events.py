"""Live events for agents as Server-Sent Events: `GET /v1/customers/{id}/events` (one
customer) and `GET /v1/events` (every customer: a team inbox).

Each event is

    id: <event id>             resend as Last-Event-ID to resume right after it
    event: <type>              message, message.status, message.<mark>, fact, cart,
                               profile, conversation, handoff, merge, …
    data: {"id", "type", "customer_id", "data"}

An event id is a stream id: the customer's stream's, or, for every customer, the
service-wide stream's; in a cluster that stream has `[redis] shards` parts and the id is
every part's stream id joined by "." (omni.live), so that resuming reads every part from
where the client stopped. A client that reconnects with `Last-Event-ID` (browsers do it
by themselves) gets what it missed, in order, then the live stream, without gaps or
repeats; when what it missed is no longer kept, it gets one `reset` event first and
should reload what it shows. Comment lines (`: keep-alive`) keep idle connections open
through proxies.

Authentication is the API key in `Authorization`, as everywhere. A browser's
EventSource cannot send headers, so these two routes also take `?access_token=` with a
token from `GET /v1/events/token`: minted with an agent key, valid for these two
routes only, for `TOKEN_TTL_S` seconds to open a stream, and signed with the key it
stands for (removing the key voids its tokens). The key itself never goes into a URL,
where proxies, logs and the browser's history would keep it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from functools import wraps

import msgspec
import structlog
from aiohttp import web

from omni.auth import API_KEYS, CALLER, Handler, authenticate, caller
from omni.clock import iso
from omni.errors import BadRequest, Forbidden, Unauthenticated
from omni.live import Closed, Dropped, Event, Listener, parse_position
from omni.settings import ROLES, ApiKey, Role
from omni.state import SERVICES, STORE
from omni.web_io import path_customer_id

log = structlog.get_logger("omni.events")
TOKEN_TTL_S = 300
HEARTBEAT_S = 15.0
WRITE_TIMEOUT_S = 10.0  # a client that takes longer to take one event is gone
RETRY_MS = 2000
STREAMS = web.AppKey("event_streams", set[Listener])
_SCOPE = b"omni-events"


class EventToken(msgspec.Struct, frozen=True):
    token: str  # pass as ?access_token= to the event streams
    expires_at: str
    expires_in: int  # seconds
    name: str  # the key's name and role, for a client to show who is signed in
    role: Role


# -- the access token -------------------------------------------------------------------


def _key_id(key: ApiKey) -> str:
    return hashlib.sha256(key.key.reveal().encode()).hexdigest()[:16]


def _mac(key: ApiKey, claim: str) -> str:
    message = _SCOPE + b"." + claim.encode()
    return hmac.new(key.key.reveal().encode(), message, hashlib.sha256).hexdigest()


def mint(key: ApiKey, now: float) -> tuple[str, int]:
    """A token for `key`'s event streams and when it expires (unix seconds)."""
    expires = int(now) + TOKEN_TTL_S
    claim = f"{_key_id(key)}.{expires}"
    return f"{claim}.{_mac(key, claim)}", expires


def verify(keys: tuple[ApiKey, ...], token: str, now: float) -> ApiKey:
    kid, _, rest = token.partition(".")
    expires, _, mac = rest.partition(".")
    if not (kid and expires.isdigit() and mac):
        raise Unauthenticated("that access_token is not one omni issued")
    found = None
    # Every key is looked at, in constant time, so timing does not say which matched.
    for key in keys:
        if hmac.compare_digest(_key_id(key), kid) and hmac.compare_digest(
            _mac(key, f"{kid}.{expires}"), mac
        ):
            found = key
    if found is None:
        raise Unauthenticated("that access_token is not one omni issued")
    if not now <= int(expires) <= now + TOKEN_TTL_S:
        raise Unauthenticated("that access_token has expired; get a new one")
    return found


def stream_guard(role: Role, handler: Handler) -> Handler:
    """Like `omni.auth.require`, also taking `?access_token=` when no Authorization
    header is sent."""

    @wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        token = request.query.get("access_token")
        if token and "Authorization" not in request.headers:
            key = verify(request.app[API_KEYS], token, time.time())
        else:
            key = authenticate(request)
        if ROLES.index(key.role) < ROLES.index(role):
            raise Forbidden(f"a {key.role} key may not do this; it needs the {role} role")
        request[CALLER] = key
        return await handler(request)

    return guarded


async def token(request: web.Request) -> web.Response:
    key = caller(request)
    value, expires = mint(key, time.time())
    body = EventToken(
        token=value,
        expires_at=iso(expires * 1000) or "",
        expires_in=TOKEN_TTL_S,
        name=key.name,
        role=key.role,
    )
    return web.Response(
        body=msgspec.json.encode(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


# -- the streams --------------------------------------------------------------------------


def setup(app: web.Application) -> None:
    """Track open streams so a shutting-down server ends them at once, instead of
    waiting out its shutdown timeout for clients that never hang up."""
    app[STREAMS] = set()
    app.on_shutdown.append(_close_streams)


async def _close_streams(app: web.Application) -> None:
    live = app[SERVICES].live
    streams = app[STREAMS]
    for listener in list(streams):
        live.close(listener)


async def customer_events(request: web.Request) -> web.StreamResponse:
    cid = path_customer_id(request)
    await request.app[STORE].parts.revision(cid)  # 404 before the stream starts
    return await _stream(request, cid)


async def all_events(request: web.Request) -> web.StreamResponse:
    return await _stream(request, None)


TOKEN_AUTH = frozenset({customer_events, all_events})


def _last_event_id(request: web.Request) -> str | None:
    value = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if not value:
        return None
    if parse_position(value.strip()) is None:
        raise BadRequest("Last-Event-ID must be the id of an event this stream sent",
                         field="Last-Event-ID")  # fmt: skip
    return value.strip()


def frame(event: Event) -> bytes:
    data = msgspec.json.encode(
        {"id": event.id, "type": event.type, "customer_id": event.customer_id, "data": event.data}
    )
    return f"id: {event.id}\nevent: {event.type}\n".encode() + b"data: " + data + b"\n\n"


RESET = (
    b'event: reset\ndata: {"type":"reset","detail":"events after Last-Event-ID are no '
    b'longer kept: reload, then carry on with this stream"}\n\n'
)


async def _stream(request: web.Request, cid: str | None) -> web.StreamResponse:
    after = _last_event_id(request)
    live = request.app[SERVICES].live
    if after is None:
        after = await live.position(cid)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        }
    )
    await response.prepare(request)
    streams = request.app[STREAMS]
    with live.listen(cid, after=after, signal=True) as listener:
        streams.add(listener)
        try:
            await _pump(request, response, listener)
        finally:
            streams.discard(listener)
    return response


async def _pump(request: web.Request, response: web.StreamResponse, listener: Listener) -> None:
    async def send(data: bytes) -> None:
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await response.write(data)

    try:
        await send(f"retry: {RETRY_MS}\n\n".encode())
        if await listener.missed():
            await send(RESET)
        while True:
            try:
                event = await listener.next(idle_s=HEARTBEAT_S)
            except TimeoutError:
                await send(b": keep-alive\n\n")
                continue
            await send(frame(event))
    except Dropped:
        log.info("event stream dropped: the client fell behind")
        _abort(request)
    except (Closed, ConnectionError):
        return
    except TimeoutError:
        log.info("event stream dropped: the client stopped reading")
        _abort(request)


def _abort(request: web.Request) -> None:
    """Drop the connection and whatever is buffered for it."""
    transport = request.transport
    if transport is not None:
        with contextlib.suppress(Exception):
            transport.abort()
