"""Channel traffic for the fault tests: each channel's real, signed request for one
message, sent to a running `omni serve`, as the channel would send it (and send it again,
for as long as it is not acknowledged with a 2xx).

A `Sender` is one customer on one channel sending numbered messages; `Ledger` keeps what
was acknowledged and what was not, so a test can check afterwards that every acknowledged
message is stored exactly once and redeliver the rest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp

from tests.processes import ADMIN, BOT

IG_SECRET = "fault-test-instagram-app-secret"
IG_ACCOUNT = "17841400000000001"
TWILIO_TOKEN = "fault-test-twilio-auth-token-01"
CHANNELS = ("web", "instagram", "voice")


def config_sections(public_url: str) -> str:
    """The config the senders need: the channels' secrets and the public URL Twilio signs."""
    return (
        f'[server]\npublic_url = "{public_url}"\n'
        f'[instagram]\napp_secret = "{IG_SECRET}"\nverify_token = "fault-verify"\n'
        f'account_id = "{IG_ACCOUNT}"\ngraph_url = "http://127.0.0.1:9/v22.0"\n'
        f'[twilio]\nauth_token = "{TWILIO_TOKEN}"\n'
    )


def _twilio_signature(url: str, params: list[tuple[str, str]]) -> str:
    payload = url + "".join(name + value for name, value in sorted(params))
    mac = hmac.new(TWILIO_TOKEN.encode(), payload.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


@dataclass(frozen=True)
class Sender:
    """One customer on one channel: `external_id` is how the channel names them."""

    channel: str
    number: int

    @property
    def external_id(self) -> str:
        if self.channel == "instagram":
            return f"11800000000{self.number:05d}"
        if self.channel == "voice":
            return f"+1415555{self.number:04d}"
        return f"fault-visitor-{self.number}"

    def message_id(self, n: int) -> str:
        """The id omni stores as channel_message_id for message `n`."""
        if self.channel == "instagram":
            return f"mid.fault.{self.number}.{n}"
        if self.channel == "voice":
            return f"{self._call_sid}:gather:{n}"
        return f"fault-{self.number}-{n}"

    @property
    def _call_sid(self) -> str:
        return f"CAfault{self.number:026d}"

    def request(self, base_url: str, public_url: str, n: int) -> tuple[str, bytes, dict[str, str]]:
        """The path, body and headers of message `n`, signed as the channel signs it."""
        text = f"{self.channel} {self.number} says {n}"
        if self.channel == "instagram":
            body = json.dumps(
                {
                    "object": "instagram",
                    "entry": [
                        {
                            "time": int(time.time() * 1000),
                            "id": IG_ACCOUNT,
                            "messaging": [
                                {
                                    "sender": {"id": self.external_id},
                                    "recipient": {"id": IG_ACCOUNT},
                                    "timestamp": int(time.time() * 1000),
                                    "message": {"mid": self.message_id(n), "text": text},
                                }
                            ],
                        }
                    ],
                }
            ).encode()
            mac = hmac.new(IG_SECRET.encode(), body, hashlib.sha256).hexdigest()
            headers = {"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={mac}"}
            return "/channels/instagram/webhook", body, headers
        if self.channel == "voice":
            path = f"/channels/voice/twilio/gather?turn={n}"
            params = [
                ("AccountSid", "AC" + "0" * 32),
                ("CallSid", self._call_sid),
                ("CallStatus", "in-progress"),
                ("Direction", "inbound"),
                ("From", self.external_id),
                ("To", "+14155550199"),
                ("SpeechResult", text),
                ("Confidence", "0.9"),
            ]
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": _twilio_signature(public_url + path, params),
            }
            return path, urlencode(params).encode(), headers
        body = json.dumps(
            {
                "channel": "web",
                "external_id": self.external_id,
                "channel_message_id": self.message_id(n),
                "text": text,
            }
        ).encode()
        return "/v1/messages", body, {**BOT, "Content-Type": "application/json"}


@dataclass
class Ledger:
    """Per sender: the numbers acknowledged (2xx) and the ones sent but not."""

    acked: dict[Sender, set[int]] = field(default_factory=dict)
    unacked: dict[Sender, set[int]] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)  # status -> count; 0: no answer

    def record(self, sender: Sender, n: int, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            self.acked.setdefault(sender, set()).add(n)
            self.unacked.get(sender, set()).discard(n)
        else:
            self.unacked.setdefault(sender, set()).add(n)

    @property
    def acked_total(self) -> int:
        return sum(len(v) for v in self.acked.values())


async def send(
    session: aiohttp.ClientSession,
    base_url: str,
    public_url: str,
    sender: Sender,
    n: int,
    ledger: Ledger,
    timeout_s: float = 5,
) -> int:
    """Send message `n` once; its status (0 when nothing answered) goes in the ledger."""
    path, body, headers = sender.request(base_url, public_url, n)
    try:
        async with session.post(
            base_url + path,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError):
        status = 0
    ledger.record(sender, n, status)
    return status


async def stored(
    session: aiohttp.ClientSession, base_url: str, sender: Sender
) -> tuple[str, list[str]]:
    """The customer the sender's identity resolves to, and the channel_message_ids of
    every message in their history on the sender's channel (oldest first)."""
    async with session.get(
        base_url + "/v1/context",
        params={"channel": sender.channel, "external_id": sender.external_id},
        headers=ADMIN,
    ) as response:
        assert response.status == 200, await response.text()
        cid: str = (await response.json())["customer"]["id"]
    ids: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200, "channel": sender.channel}
        if cursor:
            params["before"] = cursor
        async with session.get(
            f"{base_url}/v1/customers/{cid}/history", params=params, headers=ADMIN
        ) as response:
            assert response.status == 200, await response.text()
            page = await response.json()
        ids += [m["channel_message_id"] for m in page["messages"] if m["direction"] == "inbound"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return cid, ids[::-1]
