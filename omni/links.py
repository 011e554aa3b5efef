"""Link tokens: "continue on another channel". A bot asks for a token for a customer and
a channel, sends its URL (or its six-digit code) to the customer, and the customer
presents it from the other channel: that channel identity then belongs to the customer
(merging the channel's own record, if it had one, into the customer).

A token is signed (HMAC-SHA256 with a secret omni creates once in Redis, so every
process agrees without configuration), names its customer, channel and expiry, and
carries a nonce whose key in Redis is deleted when it is used. So a forged token fails
its signature, an expired one its expiry, and a used one its nonce — three different
answers, never a silent success.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Annotated, Literal

import msgspec
from msgspec import Meta
from redis.asyncio import Redis

from omni import keys
from omni.clock import iso
from omni.errors import Conflict, Gone, NotFound, Unauthenticated, ValidationFailed
from omni.live import Live
from omni.merge import announce, merge_customers
from omni.model import IdentityLink
from omni.phones import canonical_external_id
from omni.store import Store
from omni.store.reply import as_bytes

TTL_S = 15 * 60
_CODE_ATTEMPTS = 10
LinkChannel = Literal["web", "mobile", "voice", "instagram", "whatsapp"]


class LinkTokenRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    channel: LinkChannel


class LinkToken(msgspec.Struct, frozen=True):
    token: str
    code: str  # six digits, to say or key on a call
    url: str
    channel: str
    customer_id: str
    expires_at: str


class Redeem(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`token` or `code`, presented by the customer's identity on `channel`."""

    channel: LinkChannel
    external_id: Annotated[str, Meta(min_length=1, max_length=256)]
    token: Annotated[str, Meta(min_length=1, max_length=512)] | None = None
    code: Annotated[str, Meta(pattern=r"^\d{6}$")] | None = None


class Linked(msgspec.Struct, frozen=True):
    customer_id: str
    channel: str
    external_id: str
    merged_from: str | None  # the channel's own record, merged into the customer


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkTokens:
    def __init__(self, redis: Redis, store: Store, live: Live, public_url: str) -> None:
        self.redis = redis
        self.store = store
        self.live = live
        self.public_url = public_url
        self._secret: bytes | None = None

    async def secret(self) -> bytes:
        if self._secret is None:
            candidate = secrets.token_bytes(32)
            existing = await self.redis.set(keys.link_secret(), candidate, nx=True, get=True)
            self._secret = as_bytes(existing) if existing is not None else candidate
        return self._secret

    def _sign(self, secret: bytes, payload: bytes) -> str:
        return _b64(hmac.new(secret, payload, hashlib.sha256).digest()[:20])

    async def issue(self, cid: str, channel: str, now: float | None = None) -> LinkToken:
        await self.store.parts.revision(cid)  # 404 for a customer that does not exist
        now = time.time() if now is None else now
        expires = int(now) + TTL_S
        nonce = secrets.token_urlsafe(12)
        payload = f"{cid}|{channel}|{expires}|{nonce}".encode()
        token = f"lt1.{_b64(payload)}.{self._sign(await self.secret(), payload)}"
        await self.redis.set(keys.link_nonce(nonce), "1", ex=TTL_S)
        for _ in range(_CODE_ATTEMPTS):
            code = f"{secrets.randbelow(1_000_000):06d}"
            if await self.redis.set(keys.link_code(code), token, nx=True, ex=TTL_S):
                break
        else:
            raise Conflict("no free link code right now; ask again in a moment")
        return LinkToken(
            token=token,
            code=code,
            url=f"{self.public_url}/channels/{channel}/link?token={token}",
            channel=channel,
            customer_id=cid,
            expires_at=iso(expires * 1000) or "",
        )

    def _open(self, secret: bytes, token: str, now: float) -> tuple[str, str, str]:
        version, _, rest = token.partition(".")
        body, _, signature = rest.partition(".")
        try:
            payload = _unb64(body)
            cid, channel, expires, nonce = payload.decode().split("|")
            valid = version == "lt1" and hmac.compare_digest(self._sign(secret, payload), signature)
        except (ValueError, UnicodeError):
            valid = False
        if not valid:
            raise Unauthenticated("that link token is not one omni issued", field="token")
        if int(expires) < now:
            raise Gone("that link token has expired; ask for a new one", field="token")
        return cid, channel, nonce

    async def redeem(self, request: Redeem, now: float | None = None) -> Linked:
        now = time.time() if now is None else now
        token = request.token
        if (token is None) == (request.code is None):
            raise ValidationFailed("send either token or code", field="token")
        if token is None:
            found = await self.redis.get(keys.link_code(request.code or ""))
            if found is None:
                raise NotFound(
                    "no link code like that is waiting; it may have expired", field="code"
                )
            token = as_bytes(found).decode()
        cid, channel, nonce = self._open(await self.secret(), token, now)
        if channel != request.channel:
            raise ValidationFailed(
                f"that link token is for the {channel} channel, not {request.channel}",
                field="channel",
            )
        if not await self.redis.delete(keys.link_nonce(nonce)):
            raise Gone("that link token was already used", field="token")
        # A phone channel's number in its one stored form (omni.phones).
        external_id = canonical_external_id(request.channel, request.external_id)
        request = msgspec.structs.replace(request, external_id=external_id)
        current = await self.store.customers.find(request.channel, request.external_id)
        merged_from = None
        evidence = f"link token for {channel}, issued to {cid}, presented by that identity"
        if current is None:
            link = IdentityLink(channel=request.channel, external_id=request.external_id)
            await self.store.customers.link_identity(cid, link)
            await self.store.audit.record(
                [cid],
                "link_token",
                evidence=evidence,
                identity=(request.channel, request.external_id),
            )
        elif current != cid:
            # The older record survives (ids are time-ordered): its id is the one other
            # systems have had longest.
            survivor, source = sorted((cid, current))
            result = await merge_customers(
                self.store,
                survivor,
                source,
                action="link_token",
                evidence=evidence,
                identity=(request.channel, request.external_id),
            )
            await announce(self.live, result)
            cid, merged_from = result.survivor, result.source
        if request.code is not None:
            await self.redis.delete(keys.link_code(request.code))
        linked = Linked(
            customer_id=cid,
            channel=request.channel,
            external_id=request.external_id,
            merged_from=merged_from,
        )
        # Told here, so every way of presenting a token (API, chat, app, phone) tells it.
        await self.live.publish(cid, "identity.linked", msgspec.to_builtins(linked))
        return linked
