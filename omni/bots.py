"""Bot webhooks: omni POSTs each new customer message, with the customer's context, to
the channel's bot, and reads the bot's replies from the answer.

The request (one outbox delivery of kind "bot", see `omni.outbox`):

    POST <bots.<channel>.url>
    Content-Type: application/json
    X-Omni-Delivery-Id: dlv_…          the same on every attempt: de-duplicate by it
    X-Omni-Attempt: 2                  1 on the first attempt
    X-Omni-Signature: t=<unix seconds>,sha256=<hex HMAC-SHA256(secret, f"{t}.{body}")>

    {"id": "dlv_…", "type": "message.created", "bot": "<channel>",
     "customer_id": "cus_…", "message": {…}, "context": {…}}

While an agent holds the conversation (`omni.handoff`), a new message comes as
`"type": "handoff"` with `"handoff": {"agent_id"?, "since", "reason"?}` (no agent_id: the
conversation waits in the agents' queue): the bot is told, not asked, and replies in
its answer are not sent.

The signature covers the time and the exact body, so a bot recomputes it over the raw
bytes, compares in constant time and refuses a stale `t` (a replay); `verify_signature`
does all three. More than one `sha256=` may be sent while a secret is being rotated.

The answer: any 2xx with an empty body, or `{"replies": [{"text": "…"}, …]}` (at most
`REPLIES_MAX`), optionally with `"handoff": true` to hand the customer to a human agent
(on the phone, the call is transferred to `[twilio] agent_number` once the replies are
spoken; other channels ignore it for now). 408, 425, 429, 5xx, timeouts and unreachable
bots are retried by the worker; any other status and a malformed answer are a failed
delivery with a reason (a dead letter, which the operator can re-queue once the bot is
fixed).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

import aiohttp
import msgspec
from msgspec import Meta, Struct

from omni.channel import Delivery
from omni.model import TEXT_MAX, Context, Message, Payload
from omni.outbox import Job
from omni.settings import BotSettings

KIND = "bot"
SIGNATURE_HEADER = "X-Omni-Signature"
DELIVERY_HEADER = "X-Omni-Delivery-Id"
ATTEMPT_HEADER = "X-Omni-Attempt"
REPLIES_MAX = 10
ANSWER_MAX_BYTES = 256 * 1024
_RETRY_STATUSES = frozenset({408, 425, 429})


class BotReply(Struct, frozen=True):
    text: Annotated[str, Meta(min_length=1, max_length=TEXT_MAX)]
    quick_replies: Annotated[list[Payload], Meta(max_length=13)] = []


class BotAnswer(Struct, frozen=True):
    replies: Annotated[list[BotReply], Meta(max_length=REPLIES_MAX)] = []
    handoff: bool = False  # the bot asks for a human agent to take over


RepliesCallback = Callable[[Job, list[BotReply]], Awaitable[None]]
AnswerCallback = Callable[[Job, BotAnswer], Awaitable[None]]


def sign(secret: str | bytes, body: bytes, t: int) -> str:
    """The `X-Omni-Signature` value for `body` sent at unix time `t`."""
    key = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},sha256={mac}"


def verify_signature(
    secret: str | bytes, header: str, body: bytes, now: float, tolerance_s: float = 300
) -> bool:
    """True when `header` signs `body` with `secret` and its time is within
    `tolerance_s` of `now` (either way): what a bot checks before trusting a request."""
    t: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            t = int(value)
        elif name == "sha256":
            macs.append(value)
    if t is None or not macs or abs(now - t) > tolerance_s:
        return False
    expected = sign(secret, body, t).rpartition("sha256=")[2]
    # Compare against every candidate, so timing does not say which one matched.
    return sum(hmac.compare_digest(expected, mac) for mac in macs) > 0


def parse_answer(body: bytes) -> BotAnswer:
    """The bot's answer; raises ValueError with a reason a person can act on."""
    if not body.strip():
        return BotAnswer()
    try:
        return msgspec.json.decode(body, type=BotAnswer)
    except msgspec.ValidationError as exc:
        raise ValueError(f"the bot's answer does not match the schema: {exc}") from None
    except msgspec.DecodeError:
        raise ValueError("the bot's answer is not JSON") from None


def bot_event(bot: str, message: Message, context: Context) -> dict[str, Any]:
    """The payload to enqueue (kind "bot") for a new message to the `bot` of a channel."""
    return {
        "bot": bot,
        "message": msgspec.to_builtins(message),
        "context": msgspec.to_builtins(context),
    }


def request_body(job: Job) -> bytes:
    payload = job.payload if isinstance(job.payload, dict) else {}
    body = {
        "id": job.delivery_id,
        "type": payload.get("type", "message.created"),
        "bot": payload.get("bot"),
        "customer_id": job.customer_id,
        "message": payload.get("message"),
        "context": payload.get("context"),
    }
    if "handoff" in payload:
        body["handoff"] = payload["handoff"]
    return msgspec.json.encode(body)


class BotDispatcher:
    """The worker's handler for deliveries of kind "bot".

    `on_replies` receives the replies of a bot's answer (to store them on the timeline
    and queue them to the customer's channel). If it raises, the delivery is retried,
    so the bot sees the same delivery id again: a bot should answer a repeat the same
    way (or with no replies), and `on_replies` should enqueue with idempotency keys
    made from the delivery id, so a repeat stores and sends nothing twice.

    `on_answer` receives every well-formed answer whole (empty ones and `handoff`
    included), for a caller that waits on the bot itself, as the voice channel does.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        bots: Mapping[str, BotSettings],
        on_replies: RepliesCallback | None = None,
        clock: Callable[[], float] = time.time,
        *,
        on_answer: AnswerCallback | None = None,
    ) -> None:
        self.session = session
        self.bots = dict(bots)
        self.on_replies = on_replies
        self.on_answer = on_answer
        self.clock = clock

    async def __call__(self, job: Job) -> Delivery:
        bot = job.payload.get("bot") if isinstance(job.payload, dict) else None
        target = self.bots.get(bot) if isinstance(bot, str) else None
        if target is None:
            return Delivery(status="failed", reason=f"no bot configured for {bot!r}")
        body = request_body(job)
        headers = {
            "Content-Type": "application/json",
            DELIVERY_HEADER: job.delivery_id,
            ATTEMPT_HEADER: str(job.attempt),
            SIGNATURE_HEADER: sign(target.secret.reveal(), body, int(self.clock())),
        }
        timeout = aiohttp.ClientTimeout(total=target.timeout_ms / 1000)
        try:
            async with self.session.post(
                target.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as response:
                status = response.status
                answer = await _read(response) if 200 <= status < 300 else b""
        except aiohttp.InvalidURL:
            return Delivery(status="failed", reason="the bot's url is not a valid URL")
        except TimeoutError:
            return _retry(f"the bot did not answer within {target.timeout_ms} ms")
        except aiohttp.ClientError as exc:
            return _retry(f"the bot cannot be reached: {type(exc).__name__}")
        except ValueError as exc:
            return Delivery(status="failed", reason=str(exc))
        if status in _RETRY_STATUSES or status >= 500:
            return _retry(f"the bot answered HTTP {status}")
        if not 200 <= status < 300:
            return Delivery(status="failed", reason=f"the bot answered HTTP {status}")
        try:
            parsed = parse_answer(answer)
        except ValueError as exc:
            return Delivery(status="failed", reason=str(exc))
        try:
            if self.on_answer is not None:
                await self.on_answer(job, parsed)
            if parsed.replies and self.on_replies is not None:
                await self.on_replies(job, parsed.replies)
        except Exception as exc:
            return _retry(f"storing the bot's replies failed: {type(exc).__name__}")
        return Delivery(status="delivered")


def _retry(reason: str) -> Delivery:
    return Delivery(status="failed", reason=reason, retry=True)


async def _read(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > ANSWER_MAX_BYTES:
            raise ValueError(f"the bot's answer is over {ANSWER_MAX_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
