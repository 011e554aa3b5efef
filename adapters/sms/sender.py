"""Replies by SMS/MMS: Twilio's Messaging API, after the customer's opt-out is checked.

    POST {api_url}/2010-04-01/Accounts/{account_sid}/Messages.json
    Authorization: Basic base64(account_sid:auth_token)
    To, From (or MessagingServiceSid), Body, MediaUrl (repeated), StatusCallback

A customer who texted STOP is refused before Twilio is called: the reply fails with
reason `opted_out`, and is not retried. Twilio's own refusal (error 21610, the number
opted out at Twilio, say before omni knew) records the opt-out the same way. A reply
longer than `[sms] max_segments` segments fails with `too_long` (adapters.sms.outbound).
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

import aiohttp
import structlog

from adapters.sms.config import SmsConfig
from adapters.sms.outbound import REASON_OPTED_OUT, render_send, send_outcome
from adapters.sms.protocol import CHANNEL, STATUS_PATH, SmsProtocol
from omni.channel import Delivery, OutboundRequest
from omni.channel_client import send
from omni.model import Message
from omni.optouts import opt_out, opted_out
from omni.store import Store
from omni.twilio import FORM

log = structlog.get_logger("adapters.sms")
TIMEOUT_S = 10.0


class SmsAdapter(SmsProtocol):
    """The SMS channel: Twilio's webhooks (SmsProtocol) and the sender of replies."""

    def __init__(self, config: SmsConfig, session: aiohttp.ClientSession, store: Store) -> None:
        super().__init__(config.auth_token.reveal(), config.public_url)
        self.config = config
        self._session = session
        self._store = store
        account = quote(config.account_sid, safe="")
        self._url = f"{config.api_url.rstrip('/')}/2010-04-01/Accounts/{account}/Messages.json"
        basic = aiohttp.encode_basic_auth(config.account_sid, config.auth_token.reveal())
        self._headers = {"Authorization": basic, "Content-Type": FORM}
        self._callback = self.public_url + STATUS_PATH if config.status_callback else None

    async def deliver(self, message: Message, recipient: str) -> Delivery:
        if not self.config.can_send:
            return Delivery(
                "failed",
                reason="not_configured: set [sms] account_sid and from_number (or "
                "messaging_service_sid) to send",
            )
        if await opted_out(self._store, CHANNEL, recipient) is not None:
            return Delivery("failed", reason=REASON_OPTED_OUT)
        try:
            fields = render_send(
                message,
                recipient,
                sender=self.config.sender,
                status_callback=self._callback,
                max_segments=self.config.max_segments,
            )
        except ValueError as exc:
            return Delivery("failed", reason=str(exc))
        outcome = await self._post(fields)
        if outcome.reason == REASON_OPTED_OUT:
            await opt_out(self._store, CHANNEL, recipient, "twilio:21610")
        return outcome

    async def _post(self, fields: list[tuple[str, str]]) -> Delivery:
        request = OutboundRequest("POST", self._url, self._headers, urlencode(fields).encode())
        try:
            answer = await send(self._session, request, aiohttp.ClientTimeout(total=TIMEOUT_S))
            return send_outcome(answer.status, answer.body)
        except TimeoutError:
            return Delivery("failed", reason="timeout: Twilio did not answer in time", retry=True)
        except aiohttp.ClientError as exc:
            log.warning("twilio messaging unreachable", error=type(exc).__name__)
            return Delivery("failed", reason=f"network_error: {type(exc).__name__}", retry=True)
