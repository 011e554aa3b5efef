"""The mobile app: sessions and login, messages in, catch-up, push-token registration, a
live socket, and push when the customer has no live socket (`adapters.mobile`).

    POST /channels/mobile/sessions   start | renew | identify (a login links the customer)
    POST /channels/mobile/messages   a message, idempotent on client_msg_id
    GET  /channels/mobile/messages   catch-up: ?after=<message id or next_after>&limit=
    POST /channels/mobile/devices    register (or re-register) an APNs/FCM push token
    GET  /channels/mobile/ws         the live socket, while the app is in the foreground

A reply goes over the socket when the customer has one open in any omni process (the
socket keeps a presence marker in Redis); otherwise it is pushed to each of the
customer's active devices through `[mobile] push_url`. A token the provider calls invalid
marks its device inactive and is not pushed to again until the app registers it anew.
Without a push endpoint or an active device nothing is pushed and the reply is `sent`
(the app finds it in catch-up), with the reason in its status.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Literal

import aiohttp
import msgspec
import structlog
from aiohttp import web
from redis.asyncio import Redis

from adapters.base import Delivery
from adapters.client import MessageBody
from adapters.mobile import Device, DeviceRegistration, DeviceRequest, MobileAdapter
from adapters.sessions import SessionRequest
from omni import codec, keys
from omni.channels import client, http, socket
from omni.clock import iso, now_ms
from omni.delivery import Sender
from omni.errors import ConfigError, CorruptRecord
from omni.links import Linked
from omni.model import Message
from omni.route import Param, Route
from omni.settings import Settings
from omni.state import STORE
from omni.store import Store
from omni.web_io import json_response

NAME = "mobile"
DEVICES_MAX = 10  # per customer; registering one more forgets the longest-registered
REASON_INVALID = "invalid_token"
log = structlog.get_logger("omni.channels.mobile")


class DeviceRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """A registered app install as stored under the customer."""

    device: Device
    external_id: str
    registered_at: str
    status: Literal["active", "inactive"] = "active"
    reason: str | None = None  # why it is inactive


class DeviceView(msgspec.Struct, frozen=True):
    device_id: str
    external_id: str
    status: str


# -- devices -------------------------------------------------------------------------------


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def token_digest(device: Device) -> str:
    """What names a push token in Redis (never the token itself)."""
    token = f"{device.push_provider}:{device.push_token}".encode()
    return hashlib.sha256(token).hexdigest()[:32]


async def device_records(redis: Redis, cid: str) -> dict[str, DeviceRecord]:
    """A customer's registered app installs by device id (unreadable ones left out)."""
    records = {}
    for name, blob in (await redis.hgetall(keys.devices(cid))).items():
        try:
            records[_text(name)] = codec.decode(_bytes(blob), DeviceRecord)
        except (CorruptRecord, msgspec.ValidationError):
            log.warning("unreadable device record skipped", customer_id=cid)
    return records


async def register(redis: Redis, cid: str, registration: DeviceRegistration) -> None:
    """Store the device under the customer (replacing its earlier registration). A token
    another customer held moves here: a shared phone must not get the last user's pushes."""
    device = registration.device
    record = DeviceRecord(device, registration.external_id, iso(now_ms()) or "")
    holder = f"{cid} {device.device_id}"
    before = await redis.set(keys.push_token(token_digest(device)), holder, get=True)
    if before is not None and _text(before) != holder:
        owner, _, device_id = _text(before).partition(" ")
        held = (await device_records(redis, owner)).get(device_id)
        if held is not None and held.device.push_token == device.push_token:
            await redis.hdel(keys.devices(owner), device_id)
    await redis.hset(keys.devices(cid), device.device_id, codec.encode(record))
    records = await device_records(redis, cid)
    if len(records) > DEVICES_MAX:
        oldest = sorted(records, key=lambda name: records[name].registered_at)
        await redis.hdel(keys.devices(cid), *oldest[: len(records) - DEVICES_MAX])


async def deactivate(redis: Redis, cid: str, device: Device, reason: str) -> None:
    """Stop pushing to a device, unless it registered a new token meanwhile."""
    record = (await device_records(redis, cid)).get(device.device_id)
    if record is None or record.device.push_token != device.push_token:
        return
    inactive = msgspec.structs.replace(record, status="inactive", reason=reason)
    await redis.hset(keys.devices(cid), device.device_id, codec.encode(inactive))


# -- routes --------------------------------------------------------------------------------


async def mobile_sessions(request: web.Request) -> web.StreamResponse:
    return await client.sessions(request, NAME)


async def mobile_message(request: web.Request) -> web.StreamResponse:
    return await client.post_message(request, NAME)


async def mobile_link(request: web.Request) -> web.StreamResponse:
    return await client.present_link(request, NAME)


async def mobile_catch_up(request: web.Request) -> web.StreamResponse:
    return await client.catch_up(request, NAME)


async def mobile_socket(request: web.Request) -> web.StreamResponse:
    return await socket.serve(request, NAME)


async def mobile_devices(request: web.Request) -> web.StreamResponse:
    """Register a push token for the session's customer; with a verified identifier on
    an anonymous session, this is also the login."""
    adapter: MobileAdapter = http.adapter(request, NAME)
    registration = adapter.parse_device(await http.inbound(request))
    await client.live(request, registration.session)
    store = request.app[STORE]
    if registration.previous is not None and registration.user_id is not None:
        await client.log_in(store, NAME, registration.user_id, registration.previous)
    cid = await store.ensure_customer(NAME, registration.external_id)
    await register(store.redis, cid, registration)
    return json_response(msgspec.convert(adapter.render_device(registration), DeviceView))


ROUTES: tuple[Route, ...] = (
    Route("POST", "/channels/mobile/sessions", mobile_sessions,
          "Start an anonymous app-user session, renew it, or identify (log in, verified by "
          "identifier_hash = hex HMAC-SHA256 of the user id); 201 for a new app user",
          NAME, body=SessionRequest, body_required=False, response=client.SessionView,
          status=201,
          errors=(400, 401, 404, 422)),
    Route("POST", "/channels/mobile/messages", mobile_message,
          "A message from the app (Bearer session token); a retried client_msg_id is "
          "acknowledged with the same id and stored once", NAME, body=MessageBody,
          response=client.Ack, status=201, errors=(400, 401, 404, 413, 422)),
    Route("POST", "/channels/mobile/link", mobile_link,
          "Present a link token from this session (the token in the URL a bot sent): the "
          "session's identity joins the token's customer; forged 401, expired or used 410",
          NAME, body=client.LinkBody, response=Linked, errors=(400, 401, 404, 410, 422)),
    Route("GET", "/channels/mobile/messages", mobile_catch_up,
          "Catch-up: the app's messages after a message id (or next_after), oldest first",
          NAME, response=client.CatchUpPage, errors=(400, 401, 404),
          params=(Param("after", "query", "the last message id the app saw", client.AFTER),
                  Param("limit", "query", "page size, 1 to 200 (default 50)",
                        {"type": "integer", "minimum": 1, "maximum": 200}))),
    Route("POST", "/channels/mobile/devices", mobile_devices,
          "Register an APNs or FCM push token for the session's customer (re-register when "
          "the OS rotates it); an identifier with its hash also logs in", NAME,
          body=DeviceRequest, response=DeviceView, errors=(400, 401, 403, 404, 413, 422)),
    Route("GET", "/channels/mobile/ws", mobile_socket,
          "The live socket while the app is open: replies there are not pushed (frames in "
          "adapters.client)", NAME, status=101,
          params=(Param("token", "query", "the session token, if not in Authorization"),),
          errors=(400, 401, 404)),
)  # fmt: skip


# -- replies -------------------------------------------------------------------------------


class MobileSender:
    """The worker's sender for replies on the mobile channel."""

    def __init__(self, adapter: MobileAdapter, store: Store) -> None:
        self.adapter = adapter
        self.store = store

    async def __call__(self, message: Message, recipient: str) -> Delivery:
        redis = self.store.redis
        cid = message.customer_id
        if await client.online(redis, cid, NAME):
            return Delivery("sent")  # the live socket writes it (and marks it delivered)
        if not self.adapter.pushes:
            return Delivery("sent", reason="not pushed: no push endpoint; the app catches up")
        owners = [cid, *await self.store.absorbed(cid)]
        found = await asyncio.gather(*(device_records(redis, owner) for owner in owners))
        targets = [
            (owner, record.device)
            for owner, records in zip(owners, found, strict=True)
            for record in records.values()
            if record.status == "active"
        ]
        if not targets:
            return Delivery("sent", reason="not pushed: no active device; the app catches up")
        outcomes = await asyncio.gather(
            *(self.adapter.deliver(message, device) for _, device in targets)
        )
        for (owner, device), outcome in zip(targets, outcomes, strict=True):
            if outcome.reason == REASON_INVALID:
                await deactivate(redis, owner, device, REASON_INVALID)
        return combined(outcomes)


def combined(outcomes: list[Delivery]) -> Delivery:
    """One push per device: sent if any device took it; else retried if any failure is
    worth a retry; else failed with every reason."""
    sent = [o for o in outcomes if o.status != "failed"]
    if sent:
        return Delivery("sent", channel_message_id=sent[0].channel_message_id)
    retry = [o for o in outcomes if o.retry]
    if retry:
        return Delivery("failed", reason=retry[0].reason, retry=True)
    reasons = sorted({o.reason or "failed" for o in outcomes})
    return Delivery("failed", reason=",".join(reasons))


def setup(
    settings: Settings, session: aiohttp.ClientSession, store: Store
) -> tuple[MobileAdapter | None, Sender | None]:
    config = settings.mobile
    if not (config.session_secret or config.identity_secret):
        return None, None
    if not (config.session_secret and config.identity_secret):
        raise ConfigError("mobile: set both session_secret and identity_secret, or neither")
    try:
        adapter = MobileAdapter(
            session_secret=config.session_secret.reveal(),
            identity_secret=config.identity_secret.reveal(),
            push_url=config.push_url or None,
            http=session,
            push_auth=config.push_auth.reveal() or None,
            fcm_project=config.fcm_project or None,
            apns_topic=config.apns_topic or None,
            apns_sandbox_url=config.apns_sandbox_url or None,
        )
    except ConfigError as exc:
        raise ConfigError(f"mobile.{exc}") from None
    return adapter, MobileSender(adapter, store)
