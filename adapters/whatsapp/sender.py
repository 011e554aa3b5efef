"""Replies out through the Send API, under WhatsApp's 24-hour customer service window,
and the customers' media fetched back from Graph by id.

A reply is free-form only within 24 hours of the customer's last WhatsApp message
(omni's record of it: the core's `last_inbound_ms`). Outside it, and for a customer who
never wrote on WhatsApp, the reply is sent as the configured `templates.default`; with
none configured it fails at once with an `outside_window` reason and Graph is not
called. A free-form send Graph refuses as outside the window (131047, e.g. when the
clocks disagree) is sent again as the template when there is one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from adapters.whatsapp import errors
from adapters.whatsapp.config import WhatsAppConfig
from adapters.whatsapp.graph import Graph, MediaInfo, MediaUnavailable, media_info, sent, sent_parts
from adapters.whatsapp.protocol import CHANNEL
from adapters.whatsapp.render import render, render_read, render_template
from omni.channel import Delivery
from omni.channel_client import send
from omni.clock import now_ms
from omni.model import Message
from omni.store import Store

WINDOW_MS = 24 * 60 * 60 * 1000
MEDIA_TIMEOUT_S = 5.0  # a media lookup while Meta waits for the webhook's answer


class GraphClient:
    """Sends the Graph requests `graph.py` renders, for one business phone number."""

    def __init__(
        self, config: WhatsAppConfig, session: aiohttp.ClientSession, timeout: float = 10.0
    ) -> None:
        self.graph = Graph(config.graph_url, config.phone_number_id, config.access_token.reveal())
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:
        return f"GraphClient({self.graph!r})"

    async def send_reply(self, message: Message, recipient: str) -> Delivery:
        """A free-form reply, one Send API call per part, stopping at the first failure
        (no window check: that is the caller's)."""
        try:
            bodies = render(message, recipient)
        except ValueError as exc:
            return Delivery("failed", reason=f"{errors.REASON_UNSENDABLE}: {exc}")
        outcomes: list[Delivery] = []
        for body in bodies:
            outcomes.append(await self.post(body))
            if outcomes[-1].status == "failed":
                break
        return sent_parts(outcomes, len(bodies))

    async def post(self, body: dict[str, Any]) -> Delivery:
        try:
            answer = await send(self._session, self.graph.message(body), self._timeout)
        except TimeoutError:
            return Delivery("failed", reason=f"{errors.REASON_TIMEOUT}: no answer from Graph",
                            retry=True)  # fmt: skip
        except aiohttp.ClientError as exc:
            return Delivery("failed", reason=f"{errors.REASON_NETWORK}: {type(exc).__name__}",
                            retry=True)  # fmt: skip
        return sent(answer)

    async def mark_read(self, wamid: str, *, typing: bool = False) -> Delivery:
        return await self.post(render_read(wamid, typing=typing))

    async def media(self, media_id: str) -> MediaInfo:
        """Where a customer's media id is now; MediaUnavailable when Graph does not say."""
        timeout = aiohttp.ClientTimeout(total=MEDIA_TIMEOUT_S)
        try:
            answer = await send(self._session, self.graph.media(media_id), timeout)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise MediaUnavailable(f"Graph did not answer ({type(exc).__name__})",
                                   missing=False) from None  # fmt: skip
        return media_info(answer)

    async def download(self, url: str) -> aiohttp.ClientResponse:
        """Open the media URL Graph gave, for the caller to stream and release: a
        document can be 100 MB, which `omni.channel_client.send` would hold in memory."""
        try:
            response = await self._session.get(url, headers=self.graph.auth, timeout=self._timeout)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise MediaUnavailable(f"the media URL did not answer ({type(exc).__name__})",
                                   missing=False) from None  # fmt: skip
        if response.status != 200:
            response.release()
            raise MediaUnavailable(f"the media URL answered HTTP {response.status}",
                                   missing=response.status == 404)  # fmt: skip
        return response


class WindowedSender:
    """The worker's sender for WhatsApp: free-form inside the window, else the template."""

    def __init__(
        self,
        client: GraphClient,
        config: WhatsAppConfig,
        store: Store,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.client = client
        self.template = config.default_template
        self.store = store
        self.clock = clock

    async def __call__(self, message: Message, recipient: str) -> Delivery:
        last = await self.store.customers.last_inbound_ms(message.customer_id, CHANNEL)
        age = None if last is None else self.clock() - last
        if age is not None and age < WINDOW_MS:
            outcome = await self.client.send_reply(message, recipient)
            if (
                errors.reason_code(outcome.reason) != errors.REASON_OUTSIDE_WINDOW
                or outcome.channel_message_id  # some parts went out: do not repeat them
                or self.template is None
            ):
                return outcome
        return await self._template(message, recipient, age)

    async def _template(self, message: Message, recipient: str, age: int | None) -> Delivery:
        if self.template is None:
            return Delivery("failed", reason=f"{errors.REASON_OUTSIDE_WINDOW}: {closed(age)}; "
                            "[whatsapp] templates.default is not set")  # fmt: skip
        if not message.text:
            return Delivery("failed", reason=f"{errors.REASON_OUTSIDE_WINDOW}: {closed(age)}; "
                            "only a reply with text can become the template")  # fmt: skip
        profile, _ = await self.store.customers.profile(message.customer_id)
        body = render_template(self.template, recipient, message.text, profile.name)
        return await self.client.post(body)


def closed(age_ms: int | None) -> str:
    """Why a free-form reply cannot go out, in words an agent can act on."""
    if age_ms is None:
        why = "the customer has not written on WhatsApp"
    elif age_ms >= 2 * 24 * 3_600_000:
        why = f"the customer last wrote {age_ms // (24 * 3_600_000)} days ago"
    else:
        why = f"the customer last wrote {age_ms // 3_600_000} h ago"
    return f"{why}; outside the 24-hour window only an approved template can be sent"


async def not_configured(message: Message, recipient: str) -> Delivery:
    return Delivery(
        "failed",
        reason=f"{errors.REASON_NOT_CONFIGURED}: set [whatsapp] access_token and "
        "phone_number_id to send",
    )
