"""What the WhatsApp tests share: the fixtures under tests/payloads/whatsapp, Meta's
signature over them, and a local Graph API that speaks the Cloud API (the Send API, media
lookups by id and the short-lived media URLs), checks the token and records every call."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from aiohttp import web

PAYLOADS = Path(__file__).parent / "payloads" / "whatsapp"
SECRET = "7a1c5e9b3d2f4a6c8e0b1d3f5a7c9e1b"  # the fixtures' synthetic app secret
VERIFY_TOKEN = "omni-wa-verify-5b2c"
ACCESS_TOKEN = "EAAG-test-whatsapp-system-user-token"
PHONE_NUMBER_ID = "106000000000001"
WA_ID = "14155550123"
WAMID_TEXT = "wamid.HBgLMTQxNTU1NTAxMjMVAgASGBQzRUIwQTFCMkMzRDRFNUY2MDcxOAA="
# Our message the read status and the button reply point at, and the one that failed.
WAMID_OURS = "wamid.HBgLMTQxNTU1NTAxMjMVAgARGBI1QjRBM0MyRDFFMEY5QTg3NjUA"
WAMID_FAILED = "wamid.HBgLMTQxNTU1NTAxMjMVAgARGBI1QjRBM0MyRDFFMEY5QTg3NjYA"
MEDIA_ID = "1230000000000001"
INBOUND = (
    "whatsapp_text.json",
    "whatsapp_interactive_button_reply.json",
    "whatsapp_image.json",
    "whatsapp_location.json",
    "whatsapp_status_read.json",
    "whatsapp_status_failed.json",
    "whatsapp_redelivery_duplicate.json",
)
EVENTS = {  # events in each fixture
    "whatsapp_text.json": 1,
    "whatsapp_interactive_button_reply.json": 1,
    "whatsapp_image.json": 1,
    "whatsapp_location.json": 1,
    "whatsapp_status_read.json": 1,
    "whatsapp_status_failed.json": 1,
    "whatsapp_redelivery_duplicate.json": 2,
}


def raw(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def fixture_json(name: str) -> Any:
    return json.loads(raw(name))


def sidecar(name: str) -> dict[str, str]:
    """A .sig.txt file's `key: value` lines."""
    lines = (PAYLOADS / name).read_text().splitlines()
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines) if v}


def signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def handshake_cases() -> list[tuple[dict[str, str], str | None]]:
    """(query, the body expected, or None for a refusal) from the handshake fixture."""
    cases: list[tuple[dict[str, str], str | None]] = []
    query: dict[str, str] = {}
    for line in (PAYLOADS / "whatsapp_verify_handshake.txt").read_text().splitlines():
        if line.startswith("GET "):
            target = line.split()[1].split("?", 1)[1]
            query = dict(pair.split("=", 1) for pair in target.split("&"))
        elif line.startswith("expect"):
            expected = line.rsplit("body exactly: ", 1)[1] if "200" in line else None
            cases.append((query, expected))
    return cases


def change(value: dict[str, Any]) -> bytes:
    """A notification with one change, compact as Meta sends it."""
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "14155550199",
                          "phone_number_id": PHONE_NUMBER_ID}, **value}  # fmt: skip
    body = {"object": "whatsapp_business_account",
            "entry": [{"id": "102000000000001",
                       "changes": [{"value": value, "field": "messages"}]}]}  # fmt: skip
    return json.dumps(body, separators=(",", ":")).encode()


def message(kind: str, content: Any, wamid: str, **extra: Any) -> bytes:
    """A customer's message of one kind, from the fixtures' customer."""
    item = {"from": WA_ID, "id": wamid, "timestamp": "1767225900", "type": kind, kind: content,
            **extra}  # fmt: skip
    contacts = [{"profile": {"name": "Dana Example"}, "wa_id": WA_ID}]
    return change({"contacts": contacts, "messages": [item]})


def status(wamid: str, state: str, timestamp: str = "1767225700", **extra: Any) -> bytes:
    item = {"id": wamid, "status": state, "timestamp": timestamp, "recipient_id": WA_ID, **extra}
    return change({"statuses": [item]})


class Graph:
    """The Cloud API's side: `POST /v22.0/{phone_number_id}/messages` (the token first,
    error 190 otherwise; then queued answers, or a new wamid), `GET /v22.0/{media_id}`
    (a URL that needs the token) and that URL."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lookups: list[str] = []
        self.answers: list[tuple[int, Any]] = []
        self.media: dict[str, tuple[bytes, str]] = {}
        self.base = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v22.0/{number}/messages", self.send)
        app.router.add_get("/v22.0/{media_id}", self.lookup)
        app.router.add_get("/whatsapp_business/attachments/{media_id}", self.download)
        return app

    @staticmethod
    def _authorized(request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {ACCESS_TOKEN}"

    @staticmethod
    def _error(code: int, message: str, status: int = 400) -> web.Response:
        error = {"message": message, "type": "OAuthException", "code": code,
                 "fbtrace_id": "AbCdLocalGraph"}  # fmt: skip
        return web.json_response({"error": error}, status=status)

    async def send(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"path": request.path, "authorization":
                              request.headers.get("Authorization"), "body": body})  # fmt: skip
        if not self._authorized(request):
            return self._error(190, "Error validating access token: Session has expired", 401)
        if body.get("messaging_product") != "whatsapp" or not body.get("to"):
            return self._error(100, "(#100) Invalid parameter")
        if self.answers:
            status, answer = self.answers.pop(0)
            return web.json_response(answer, status=status)
        wamid = f"wamid.local.{len(self.requests)}"
        return web.json_response({"messaging_product": "whatsapp",
                                  "contacts": [{"input": body["to"], "wa_id": body["to"]}],
                                  "messages": [{"id": wamid}]})  # fmt: skip

    async def lookup(self, request: web.Request) -> web.Response:
        media_id = request.match_info["media_id"]
        self.lookups.append(media_id)
        if not self._authorized(request):
            return self._error(190, "Error validating access token", 401)
        if media_id not in self.media:
            return self._error(100, "Unsupported get request. Object does not exist")
        data, mime = self.media[media_id]
        host = f"{request.scheme}://{request.host}"
        return web.json_response({
            "messaging_product": "whatsapp",
            "url": f"{host}/whatsapp_business/attachments/{media_id}?ext=1&hash=x",
            "mime_type": mime,
            "sha256": hashlib.sha256(data).hexdigest(),
            "file_size": len(data),
            "id": media_id,
        })  # fmt: skip

    async def download(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.Response(status=401)
        data, mime = self.media[request.match_info["media_id"]]
        return web.Response(body=data, content_type=mime)
