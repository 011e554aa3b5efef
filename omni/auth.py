"""API keys and roles: `Authorization: Bearer <key>`, roles ordered bot < agent < admin."""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from functools import wraps

from aiohttp import web

from omni.errors import Forbidden, Unauthenticated
from omni.model import Author
from omni.ratelimit import LIMITER
from omni.settings import ROLES, ApiKey, Role
from omni.store.audit import ACTOR, Actor

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_KEYS = web.AppKey("api_keys", tuple[ApiKey, ...])
CALLER = web.RequestKey("caller", ApiKey)


def _rank(role: Role) -> int:
    return ROLES.index(role)


def authenticate(request: web.Request) -> ApiKey:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send an API key as Authorization: Bearer <key>")
    # Compare digests against every key in constant time: timing reveals neither a
    # matching prefix nor a key's length, nor which key matched.
    offered = hashlib.sha256(token.strip().encode()).digest()
    found = None
    for key in request.app[API_KEYS]:
        if hmac.compare_digest(_digest(key.key.reveal()), offered):
            found = key
    if found is None:
        raise Unauthenticated("that API key is not known")
    return found


@functools.cache
def _digest(configured: str) -> bytes:
    """A configured key's digest, made once per process rather than once per request
    (the keys are the settings', a handful)."""
    return hashlib.sha256(configured.encode()).digest()


def require(role: Role, handler: Handler) -> Handler:
    """Wrap a handler so only keys of `role` or above reach it."""

    @wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        caller = authenticate(request)
        if _rank(caller.role) < _rank(role):
            raise Forbidden(f"a {caller.role} key may not do this; it needs the {role} role")
        request[CALLER] = caller
        # Who the audit log names for identity changes made in this request.
        ACTOR.set(Actor(kind="key", name=caller.name, role=caller.role))
        limiter = request.app[LIMITER]
        only_reads = _READS_ONLY.get(handler)
        if only_reads is None or not only_reads(request):
            await limiter.key(caller.key.reveal())
            return await handler(request)
        # The hit goes to Redis with the handler's first read, in one round trip rather
        # than two; over the limit, the answer is the same 429 (what was read is dropped).
        hit = limiter.stage_key(caller.key.reveal())
        try:
            response = await handler(request)
        except Exception:
            await limiter.settle(hit)  # a 429 comes before the handler's own refusal
            raise
        except BaseException:
            if hit is not None:
                hit.replies.cancel()
            raise
        await limiter.settle(hit)
        return response

    return guarded


# Handlers that only read, for the requests their predicate accepts: see `reads_only`.
_READS_ONLY: dict[Handler, Callable[[web.Request], bool]] = {}


def _always(_: web.Request) -> bool:
    return True


def reads_only(
    when: Callable[[web.Request], bool] = _always,
) -> Callable[[Handler], Handler]:
    """Marks a handler that writes nothing (for the requests `when` accepts): `require`
    then sends its rate-limit hit with the handler's reads instead of a round trip
    before them, and answers 429 all the same when the key is over its limit."""

    def mark(handler: Handler) -> Handler:
        _READS_ONLY[handler] = when
        return handler

    return mark


def caller(request: web.Request) -> ApiKey:
    return request[CALLER]


def author(request: web.Request) -> Author:
    """Who the caller writes as: a bot key as the bot, any other as an agent."""
    key = caller(request)
    if key.role == "bot":
        return Author(kind="bot", name=key.name)
    return Author(kind="agent", id=key.name, name=key.name)
