"""Session tokens that stop working before they expire.

The web and mobile session tokens are stateless (adapters.chat.sessions), so ending one
early needs a record: per (channel, external_id), the time before which every token
issued for that identity is void. Two events write one:

- a login: the anonymous visitor's token (external_id `vis_…`) is void once the visitor
  is joined to the known customer, so whoever uses the device next does not read the
  logged-in customer's conversation with a token picked up before the login;
- an erasure: every session of every identity of the customer is void.

Tokens carry their issue time in whole seconds, so a token issued in the same second
as the revocation is void too (the client starts a new session). The key is a hash of
the identity, never the identity itself: an erased customer's ids are not kept.
"""

from __future__ import annotations

import hashlib

from omni import keys
from omni.clock import now_ms
from omni.errors import Unauthenticated
from omni.store import Store

# Longer than any session token lives (adapters.chat.sessions.SESSION_TTL_S is 30 days).
REVOKED_TTL_S = 90 * 24 * 3600


def _key(channel: str, external_id: str) -> str:
    digest = hashlib.sha256(f"{channel}\x00{external_id}".encode()).hexdigest()[:32]
    return keys.revoked_sessions(digest)


async def revoke(store: Store, channel: str, external_id: str, at_ms: int | None = None) -> None:
    """Void every token of (channel, external_id) issued up to now (`at_ms`)."""
    at = now_ms() if at_ms is None else at_ms
    await store.redis.set(_key(channel, external_id), at, ex=REVOKED_TTL_S)


async def check(store: Store, channel: str, external_id: str, issued_at_ms: int) -> None:
    """Unauthenticated if a token of this identity issued at `issued_at_ms` was voided."""
    voided = await store.redis.get(_key(channel, external_id))
    if voided is not None and issued_at_ms // 1000 <= int(voided) // 1000:
        raise Unauthenticated("this session has ended; start a new session")
