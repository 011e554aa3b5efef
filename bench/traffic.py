"""Pre-built requests: every request wrk sends is made here, in Python, as raw HTTP/1.1
bytes, and written to a file that bench/replay.lua replays in order.

wrk cannot sign a body (no HMAC in its Lua), and building requests while measuring
would measure the builder too; so a file holds every request of a run, each with a mid
or channel message id of its own, and omni and the baseline are sent the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import msgspec

API_KEY = "bench-bot-key-0001"
APP_SECRET = "bench-instagram-app-secret-0001"
VERIFY_TOKEN = "bench-verify-token"
IG_ACCOUNT = "17841400000000001"
# A 100-character text: the message size the memory targets are stated for.
TEXT = ("Hi! Is my order #A-1042 shipped yet? I ordered it last Tuesday and the "
        "tracking page is still empty.")[:100]  # fmt: skip
HISTORY_PAGE = 50
INGEST_EVERY = 5  # the mixed load: one ingest in every 5 requests, the rest reads

_json = msgspec.json.Encoder()


def raw(
    method: str, path: str, body: bytes = b"", headers: Sequence[tuple[str, str]] = ()
) -> bytes:
    """One HTTP/1.1 request as it goes on the wire (keep-alive is HTTP/1.1's default)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _bearer() -> tuple[str, str]:
    return ("Authorization", f"Bearer {API_KEY}")


def sender_id(index: int) -> str:
    """The Instagram-scoped id of the index-th bench customer."""
    return str(1180000000000000 + index)


def web_id(index: int) -> str:
    return f"bench-web-{index}"


def instagram_mid(tag: str, n: int) -> str:
    """A mid shaped like Meta's (base64 of an item path, ~100 characters), so the
    de-duplication index sees ids of the real length."""
    item = f"ig_message_item:1:IGMessageID:{IG_ACCOUNT}:{tag}:{n:012d}"
    return base64.urlsafe_b64encode(item.encode()).decode().rstrip("=")


def instagram_body(sender: str, mid: str, text: str = TEXT, at_ms: int = 1767225599688) -> bytes:
    """A webhook notification with one text message, as tests/payloads/instagram has it."""
    event = {
        "sender": {"id": sender},
        "recipient": {"id": IG_ACCOUNT},
        "timestamp": at_ms,
        "message": {"mid": mid, "text": text},
    }
    return _json.encode(
        {"object": "instagram", "entry": [{"time": at_ms, "id": IG_ACCOUNT, "messaging": [event]}]}
    )


def signature(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def instagram_webhook(sender: str, mid: str, secret: str = APP_SECRET) -> bytes:
    body = instagram_body(sender, mid)
    headers = [
        ("Content-Type", "application/json"),
        ("X-Hub-Signature-256", signature(body, secret)),
    ]
    return raw("POST", "/channels/instagram/webhook", body, headers)


def message_post(external_id: str, channel_message_id: str, channel: str = "web") -> bytes:
    body = _json.encode(
        {"channel": channel, "external_id": external_id,
         "channel_message_id": channel_message_id, "text": TEXT}
    )  # fmt: skip
    return raw("POST", "/v1/messages", body, [("Content-Type", "application/json"), _bearer()])


def context_get(cid: str) -> bytes:
    return raw("GET", f"/v1/customers/{cid}/context", headers=[_bearer()])


def history_get(cid: str, limit: int = HISTORY_PAGE) -> bytes:
    return raw("GET", f"/v1/customers/{cid}/history?limit={limit}", headers=[_bearer()])


# -- the scenarios' request streams ----------------------------------------------------


def instagram_ingest(senders: Sequence[str], tag: str, count: int) -> Iterator[bytes]:
    """Signed webhooks, a fresh mid each, cycling over the customers."""
    for n, sender in zip(range(count), itertools.cycle(senders), strict=False):
        yield instagram_webhook(sender, instagram_mid(tag, n))


def messages_ingest(external_ids: Sequence[str], tag: str, count: int) -> Iterator[bytes]:
    for n, external_id in zip(range(count), itertools.cycle(external_ids), strict=False):
        yield message_post(external_id, f"{tag}-{n}")


def context_reads(cids: Sequence[str]) -> Iterator[bytes]:
    return (context_get(cid) for cid in cids)


def history_reads(cids: Sequence[str]) -> Iterator[bytes]:
    return (history_get(cid) for cid in cids)


def mixed(
    cids: Sequence[str], external_ids: Sequence[str], tag: str, count: int
) -> Iterator[bytes]:
    """Four context reads, then one ingest, over the same customers (cids[i] is the
    customer of external_ids[i]), so the reads see the writes land."""
    readers = itertools.cycle(cids)
    writers = itertools.cycle(external_ids)
    for n in range(count):
        if n % INGEST_EVERY == INGEST_EVERY - 1:
            yield message_post(next(writers), f"{tag}-{n}")
        else:
            yield context_get(next(readers))


# -- the file bench/replay.lua reads -----------------------------------------------------


def write_requests(path: Path, requests: Iterable[bytes]) -> int:
    """Write `<length>\\n<request bytes>` records; returns how many."""
    count = 0
    with path.open("wb") as out:
        for request in requests:
            out.write(b"%d\n" % len(request))
            out.write(request)
            count += 1
    return count


def read_requests(path: Path) -> list[bytes]:
    """The records of a request file, as replay.lua splits them."""
    data = path.read_bytes()
    requests, pos = [], 0
    while pos < len(data):
        newline = data.index(b"\n", pos)
        length = int(data[pos:newline])
        requests.append(data[newline + 1 : newline + 1 + length])
        pos = newline + 1 + length
    return requests
