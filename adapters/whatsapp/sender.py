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

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from adapters.whatsapp import errors
from adapters.whatsapp.config import WhatsAppConfig
from adapters.whatsapp.protocol import CHANNEL
from adapters.whatsapp.render import render, render_read, render_template
from omni.channel import Delivery
from omni.clock import now_ms
from omni.model import Message
from omni.store import Store

WINDOW_MS = 24 * 60 * 60 * 1000
MEDIA_TIMEOUT_S = 5.0  # a media lookup while Meta waits for the webhook's answer


class GraphError(Exception):
    """Graph did not give what was asked: `status` is the HTTP status to pass on."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class GraphClient:
    """The Cloud API as one business phone number uses it."""

    def __init__(
        self, config: WhatsAppConfig, session: aiohttp.ClientSession, timeout: float = 10.0
    ) -> None:
        self._graph = config.graph_url.rstrip("/")
        self._messages = f"{self._graph}/{quote(config.phone_number_id, safe='')}/messages"
        self._token = config.access_token.reveal()
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:
        return f"GraphClient(url={self._messages!r}, token=****)"

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    async def send_reply(self, message: Message, recipient: str) -> Delivery:
        """A free-form reply (no window check: that is the caller's)."""
        try:
            bodies = render(message, recipient)
        except ValueError as exc:
            return Delivery("failed", reason=f"{errors.REASON_UNSENDABLE}: {exc}")
        return await self.send(bodies)

    async def send(self, bodies: list[dict[str, Any]]) -> Delivery:
        """Each body in order; the delivery's id is the first message's wamid. A failure
        after some parts were sent says how many were."""
        first: str | None = None
        for index, body in enumerate(bodies):
            outcome = await self.post(body)
            if outcome.status == "failed":
                if index:
                    reason = f"{outcome.reason} (after {index} of {len(bodies)} parts were sent)"
                    return Delivery("failed", first, reason, outcome.retry)
                return outcome
            first = first or outcome.channel_message_id
        return Delivery("sent", channel_message_id=first)

    async def post(self, body: dict[str, Any]) -> Delivery:
        try:
            async with self._session.post(
                self._messages, json=body, headers=self._auth, timeout=self._timeout
            ) as response:
                status, raw = response.status, await response.read()
        except TimeoutError:
            return Delivery("failed", reason=f"{errors.REASON_TIMEOUT}: no answer from Graph",
                            retry=True)  # fmt: skip
        except aiohttp.ClientError as exc:
            return Delivery("failed", reason=f"{errors.REASON_NETWORK}: {type(exc).__name__}",
                            retry=True)  # fmt: skip
        data = _json(raw)
        if 200 <= status < 300 and not (isinstance(data, dict) and "error" in data):
            return Delivery("sent", channel_message_id=_wamid(data))
        return errors.graph_failure(status, data)

    async def mark_read(self, wamid: str, *, typing: bool = False) -> Delivery:
        return await self.post(render_read(wamid, typing=typing))

    async def media(self, media_id: str) -> dict[str, Any]:
        """`GET {graph_url}/{media-id}`: url (valid for minutes, needs the token),
        mime_type, sha256, file_size. GraphError when Graph does not give it."""
        url = f"{self._graph}/{quote(media_id, safe='')}"
        timeout = aiohttp.ClientTimeout(total=MEDIA_TIMEOUT_S)
        try:
            async with self._session.get(url, headers=self._auth, timeout=timeout) as response:
                status, raw = response.status, await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise GraphError(503, f"Graph did not answer ({type(exc).__name__})") from None
        data = _json(raw)
        if status == 200 and isinstance(data, dict) and isinstance(data.get("url"), str):
            return data
        reason = errors.graph_failure(status, data).reason or f"HTTP {status}"
        raise GraphError(404 if status in (400, 404) else 503, reason)

    async def download(self, url: str) -> aiohttp.ClientResponse:
        """Open the media URL Graph gave (the caller streams and releases it)."""
        try:
            response = await self._session.get(url, headers=self._auth, timeout=self._timeout)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise GraphError(503, f"the media URL did not answer ({type(exc).__name__})") from None
        if response.status != 200:
            response.release()
            raise GraphError(404 if response.status == 404 else 503,
                             f"the media URL answered HTTP {response.status}")  # fmt: skip
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


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _wamid(data: Any) -> str | None:
    messages = data.get("messages") if isinstance(data, dict) else None
    first = messages[0] if isinstance(messages, list) and messages else None
    wamid = first.get("id") if isinstance(first, dict) else None
    return wamid if isinstance(wamid, str) and wamid else None
