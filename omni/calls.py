"""A customer's calls: each call's latest status (and Twilio's callback sequence), kept
under the customer so a late, out-of-order status callback never rolls a call back."""

from __future__ import annotations

from collections.abc import Callable

from redis.exceptions import WatchError

from omni import keys
from omni.store import Store

# Whether (status, sequence) is newer news than the (status, sequence) held: the
# channel's own rule (Twilio's call progress order and callback sequence numbers).
Supersedes = Callable[[str, int | None, str | None, int | None], bool]


async def record_status(
    store: Store, cid: str, call_id: str, status: str, sequence: int | None, supersedes: Supersedes
) -> bool:
    """Keep the call's latest status; False when it is older news than what is held."""
    key = keys.calls(cid)
    async with store.redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(key)
                held = await pipe.hget(key, call_id)
                old_status, old_sequence = _parse_status(held)
                if not supersedes(status, sequence, old_status, old_sequence):
                    return False  # leaving the block unwatches
                pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                pipe.hset(key, call_id, f"{status} {_seq(sequence)}")
                await pipe.execute()
                return True
            except WatchError:  # another callback of the same customer wrote first
                continue


def _seq(sequence: int | None) -> str:
    return "-" if sequence is None else str(sequence)


def _parse_status(held: bytes | str | None) -> tuple[str | None, int | None]:
    if not held:
        return None, None
    text = held.decode() if isinstance(held, bytes) else held
    status, _, sequence = text.partition(" ")
    return status, int(sequence) if sequence.isdigit() else None


_LIVE = frozenset({"queued", "initiated", "ringing", "in-progress", "answered"})


async def live_call(store: Store, cid: str) -> str | None:
    """The CallSid of one of the customer's calls still on the line, if any."""
    held = await store.redis.hgetall(keys.calls(cid))
    for call_id, value in held.items():
        status, _ = _parse_status(value)
        if status in _LIVE:
            return call_id.decode() if isinstance(call_id, bytes) else str(call_id)
    return None
