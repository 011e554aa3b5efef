"""One-time tokens: a webhook whose signature covers no body (Mailgun signs only a
timestamp and a token) is replayable for as long as its timestamp is accepted, so each
token is remembered for that long and a second post with it is refused."""

from __future__ import annotations

import hashlib

from omni import keys
from omni.store import Store


def _digest(token: str) -> str:
    return hashlib.blake2b(token.encode(), digest_size=16).hexdigest()


async def first_use(store: Store, scope: str, token: str, ttl_s: int) -> bool:
    """True the first time `token` is seen in `scope` within `ttl_s` seconds; False for
    a reuse. One SET NX EX: two concurrent posts with one token cannot both pass."""
    created = await store.redis.set(
        keys.once(scope, _digest(token)), b"1", nx=True, ex=max(ttl_s, 1)
    )
    return bool(created)


async def forget(store: Store, scope: str, token: str) -> None:
    """Let a token be used again: the post that used it failed before storing anything,
    and the provider's retry (the same token) must not be refused for it."""
    await store.redis.delete(keys.once(scope, _digest(token)))
