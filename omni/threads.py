"""E-mail threads: which customer a Message-ID belongs to, and the last mail each way.

A reply names the mail it answers in `In-Reply-To` and its ancestors in `References`
(RFC 5322 §3.6.4). omni indexes every Message-ID it sends or stores, with the address
that mail went to or came from, so a reply can be matched to the customer it answers;
and it keeps each customer's last mail from them (`in`) and to them (`out`), so a reply
omni sends carries `In-Reply-To`, `References` and `Re: <subject>` that mail programs
thread under the customer's message.

The index points at a customer the way a channel identity does: erasure
(omni.erasure) deletes each entry that still points at the person it erases.
"""

from __future__ import annotations

import hashlib

import msgspec

from omni import codec, keys
from omni.store import Store
from omni.store.reply import as_bytes as _b

REFERENCES_MAX = 20  # ids kept in References: the root and the newest (RFC 5322 allows trimming)


class MailThread(msgspec.Struct, frozen=True):
    """One mail of a thread: its Message-ID (without the angle brackets), its subject
    and its References (oldest first)."""

    message_id: str
    subject: str = ""
    references: list[str] = []

    def reply_references(self) -> list[str]:
        """The References of a reply to this mail: its own, then its id."""
        chain = [*self.references, self.message_id]
        if len(chain) > REFERENCES_MAX:
            chain = [chain[0], *chain[-(REFERENCES_MAX - 1) :]]
        return chain


def digest(message_id: str) -> str:
    return hashlib.blake2b(message_id.encode(), digest_size=16).hexdigest()


class Threads:
    def __init__(self, store: Store) -> None:
        self.redis = store.redis

    async def index(self, cid: str, message_id: str, address: str) -> None:
        """Remember that `message_id` is a mail to or from `address`, of customer `cid`."""
        key = digest(message_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.message_id(key), cid)
            pipe.hset(keys.mail(cid), f"x:{key}", address)
            await pipe.execute()

    async def find(self, message_ids: list[str]) -> tuple[str, str] | None:
        """(customer id, address) of the first of `message_ids` omni knows, or None."""
        for message_id in message_ids:
            key = digest(message_id)
            found = await self.redis.get(keys.message_id(key))
            if found is None:
                continue
            cid = _b(found).decode()
            address = await self.redis.hget(keys.mail(cid), f"x:{key}")
            return cid, _b(address).decode() if address else ""
        return None

    async def note(self, cid: str, direction: str, mail: MailThread) -> None:
        """The customer's last mail from them (`in`) or to them (`out`)."""
        await self.redis.hset(keys.mail(cid), direction, codec.encode(mail))

    async def last(self, cid: str) -> tuple[MailThread | None, MailThread | None]:
        """The customer's last mail from them and to them."""
        got, sent = await self.redis.hmget(keys.mail(cid), ["in", "out"])
        return (
            codec.decode(_b(got), MailThread) if got else None,
            codec.decode(_b(sent), MailThread) if sent else None,
        )
