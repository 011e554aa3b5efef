"""The mobile app: omni's own client protocol (CHANNELS.md 3.2-3.5) plus push through
the Apple Push Notification service provider API and Firebase Cloud Messaging HTTP v1.

Signature schemes: sessions are HS256 JWTs under the server's session secret and login
is `identifier_hash = hex(HMAC-SHA256(identity_secret, identifier))` (Intercom's
per-platform `user_hash`), both in constant time (`adapters.chat.sessions`). Push requests
carry `Authorization: Bearer <push_auth>` (an APNs provider JWT, an FCM OAuth token, or
the key of a relay that adds them).

Routes the core serves with this adapter:

    POST /channels/mobile/sessions      `session_request` (start | renew | identify)
    POST /channels/mobile/messages      `parse` -> [Received] (adapters.chat.protocol schema)
    POST /channels/mobile/devices       `parse_device` -> DeviceRegistration;
                                        answer `render_device(…)` with 200
    GET  /channels/mobile/messages?after=<omni id>&limit=<1-200>
                                        `parse_catch_up` -> CatchUp; answer
                                        `render_catch_up(…)`
    GET  /channels/mobile/ws            the socket frames of `adapters.chat` (no Origin:
                                        apps are not browsers)

Device registration body (unknown fields ignored), with the Bearer session token:

    {"type": "register_device",                              optional
     "identifier": "cust_000123", "identifier_hash": "<hex>",  optional, verified together
     "device": {"device_id": "<SDK guid>", "platform": "ios"|"android",
                "push_provider": "apns"|"fcm", "push_token": "…",
                "app_id": "com.example.shop", "app_version": "3.14.0",
                "os_version": "18.2", "locale": "en-US",
                "apns_env": "production"|"sandbox"}}          apns only

Push (`push_request`, sent by `adapters.mobile.sender`), to configurable base URLs so
tests and relays can stand in (without a `push_url` nothing is pushed and the push fails
with "not_configured:push_url"):

    APNs  POST {push_url or apns_sandbox_url}/3/device/<token>
          apns-topic (device app_id, else apns_topic), apns-push-type: alert,
          apns-priority: 10, apns-id (uuid5 of the message id), apns-collapse-id
          (message id, so a retried push replaces itself)
          {"aps":{"alert":{"title","body"},"sound":"default","thread-id":<conversation>,
                  "mutable-content":1},"omni":{"message_id","conversation_id"}}
    FCM   POST {push_url}/v1/projects/<fcm_project>/messages:send
          {"message":{"token","notification":{"title","body"},
                      "data":{"omni_message_id","omni_conversation_id"},
                      "android":{"priority":"HIGH","notification":{"tag":<message id>}},
                      "apns":{…same aps…}   (iOS devices registered through FCM)}}

Answers: 2xx is `sent`; an invalid or unregistered token (APNs 410, BadDeviceToken,
DeviceTokenNotForTopic; FCM UNREGISTERED, SENDER_ID_MISMATCH, an invalid registration
token) is `failed` with reason "invalid_token" and no retry, so the core marks the
device inactive; 429, 5xx, a timeout or a refused connection fail with retry=True.
Real APNs speaks only HTTP/2: in production point `push_url` at a relay for APNs.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

import msgspec
from msgspec import Meta, Struct

from adapters.chat.protocol import CatchUp, ClientChannel
from adapters.chat.sessions import (
    SESSION_TTL_S,
    USER_PREFIX,
    Session,
    UserId,
    decode_json,
)
from omni.channel import Delivery, InboundRequest, OutboundRequest, ProviderAnswer
from omni.clock import now_ms
from omni.devices import Device
from omni.errors import ConfigError, Forbidden, ValidationFailed
from omni.model import Message

__all__ = [
    "PREVIEW_MAX",
    "CatchUp",
    "Device",
    "DeviceRegistration",
    "DeviceRequest",
    "MobileAdapter",
]

PREVIEW_MAX = 180  # characters of message text shown in a notification
_INVALID_APNS = {"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered", "ExpiredToken"}
_INVALID_FCM = {"UNREGISTERED", "SENDER_ID_MISMATCH"}
_APNS_TOKEN = re.compile(r"[0-9a-f]{64,200}")


class DeviceRequest(Struct, frozen=True):
    """`POST /channels/mobile/devices` (see the module docstring)."""

    device: Device
    type: Literal["register_device"] = "register_device"
    identifier: UserId | None = None
    identifier_hash: Annotated[str, Meta(max_length=128)] | None = None


@dataclass(frozen=True)
class DeviceRegistration:
    """A device to store (replacing any earlier one with its device_id) and bind to the
    customer of (mobile, external_id). `previous` is an anonymous session this
    registration identified: link its external_id to the same customer, as after login."""

    device: Device
    session: Session
    external_id: str
    user_id: str | None
    previous: Session | None = None


class MobileAdapter(ClientChannel):
    """The mobile app channel: sessions, devices, and the push requests that
    `adapters.mobile.sender` sends."""

    channel = "mobile"

    def __init__(
        self,
        *,
        session_secret: str | bytes,
        identity_secret: str | bytes,
        push_url: str | None,
        push_auth: str | Callable[[], str] | None = None,
        fcm_project: str | None = None,
        apns_topic: str | None = None,
        apns_sandbox_url: str | None = None,
        push_title: str = "New message",
        push_preview: bool = True,
        push_fallback: str = "You have a new message",
        session_ttl_s: int = SESSION_TTL_S,
        previous_session_secrets: Sequence[str | bytes] = (),
        clock: Callable[[], int] = now_ms,
    ) -> None:
        super().__init__(
            session_secret=session_secret,
            identity_secret=identity_secret,
            session_ttl_s=session_ttl_s,
            previous_session_secrets=previous_session_secrets,
            clock=clock,
        )
        for name, url in (("push_url", push_url), ("apns_sandbox_url", apns_sandbox_url)):
            if url is not None and not url.startswith(("http://", "https://")):
                raise ConfigError(f"{name}: must be an http(s) URL, not {url!r}")
        self._push_url = (push_url or "").rstrip("/")
        self._sandbox_url = (apns_sandbox_url or push_url or "").rstrip("/")
        self._push_auth = push_auth
        self._fcm_project = fcm_project
        self._apns_topic = apns_topic
        self._title = push_title
        self._preview = push_preview
        self._fallback = push_fallback

    # -- devices and catch-up --------------------------------------------------------

    def parse_device(
        self, request: InboundRequest, now_ms: int | None = None
    ) -> DeviceRegistration:
        """`POST /channels/mobile/devices` (see the module docstring)."""
        session = self.authenticate(request, now_ms)
        body = decode_json(request.body, DeviceRequest)
        device = body.device
        if device.push_provider == "apns":
            if device.platform != "ios":
                raise ValidationFailed("apns pushes only to ios", field="device.push_provider")
            token = device.push_token.lower()
            if not _APNS_TOKEN.fullmatch(token) or len(token) % 2:
                raise ValidationFailed(
                    "an APNs device token is 64 or more hex digits", field="device.push_token"
                )
            device = msgspec.structs.replace(device, push_token=token)
        elif device.apns_env is not None:
            raise ValidationFailed("apns_env is only for apns devices", field="device.apns_env")
        if body.identifier is None:
            if body.identifier_hash is not None:
                raise ValidationFailed("identifier_hash needs its identifier", field="identifier")
            return DeviceRegistration(device, session, session.external_id, session.user_id)
        self.verify_identity(body.identifier, body.identifier_hash)
        if session.user_id not in (None, body.identifier):
            raise Forbidden(
                "the identifier is not this session's user; identify first", field="identifier"
            )
        previous = session if session.user_id is None else None
        user = body.identifier
        return DeviceRegistration(device, session, USER_PREFIX + user, user, previous)

    def render_device(self, registration: DeviceRegistration) -> dict[str, Any]:
        return {
            "device_id": registration.device.device_id,
            "external_id": registration.external_id,
            "status": "active",
        }

    # -- push ------------------------------------------------------------------------

    @property
    def pushes(self) -> bool:
        """Whether a push endpoint is configured at all (push is optional)."""
        return bool(self._push_url)

    def push_request(self, message: Message, device: Device) -> OutboundRequest | Delivery:
        """The push of one message to one device (see the module docstring), or the failed
        Delivery saying why none can be sent."""
        if not self._push_url:
            return Delivery("failed", reason="not_configured:push_url")
        title, body = self._alert(message)
        aps: dict[str, Any] = {
            "alert": {"title": title, "body": body},
            "sound": "default",
            "thread-id": message.conversation_id,
            "mutable-content": 1,
        }
        headers = {"Content-Type": "application/json"}
        auth = self._push_auth() if callable(self._push_auth) else self._push_auth
        if auth:
            headers["Authorization"] = f"Bearer {auth}"
        if device.push_provider == "apns":
            topic = device.app_id or self._apns_topic
            if topic is None:
                return Delivery("failed", reason="not_configured:apns_topic")
            base = self._sandbox_url if device.apns_env == "sandbox" else self._push_url
            url = f"{base}/3/device/{quote(device.push_token, safe='')}"
            headers.update(_apns_headers(message, topic))
            payload = {
                "aps": aps,
                "omni": {"message_id": message.id, "conversation_id": message.conversation_id},
            }
            return OutboundRequest("POST", url, headers, msgspec.json.encode(payload))
        if not self._fcm_project:
            return Delivery("failed", reason="not_configured:fcm_project")
        fcm: dict[str, Any] = {
            "token": device.push_token,
            "notification": {"title": title, "body": body},
            "data": {
                "omni_message_id": message.id,
                "omni_conversation_id": message.conversation_id,
            },
            "android": {"priority": "HIGH", "notification": {"tag": message.id}},
        }
        if device.platform == "ios":
            fcm["apns"] = {"headers": _apns_headers(message, None), "payload": {"aps": aps}}
        url = f"{self._push_url}/v1/projects/{quote(self._fcm_project, safe='')}/messages:send"
        return OutboundRequest("POST", url, headers, msgspec.json.encode({"message": fcm}))

    def push_answer(self, device: Device, answer: ProviderAnswer) -> Delivery:
        """What the push provider's answer to `push_request(…, device)` means."""
        try:
            decoded: Any = msgspec.json.decode(answer.body) if answer.body else None
        except msgspec.DecodeError:
            decoded = None
        if device.push_provider == "apns":
            return _apns_outcome(answer.status, decoded, answer.headers.get("apns-id"))
        return _fcm_outcome(answer.status, decoded)

    def _alert(self, message: Message) -> tuple[str, str]:
        title = message.author.name or self._title
        text = (message.text or "").strip()
        if not self._preview or not text:
            return title, self._fallback
        return title, text if len(text) <= PREVIEW_MAX else text[: PREVIEW_MAX - 1] + "…"


# A push that got no answer (refused, reset, timed out): worth a retry.
UNREACHABLE = Delivery("failed", reason="unreachable", retry=True)


def _apns_headers(message: Message, topic: str | None) -> dict[str, str]:
    headers = {
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-id": str(uuid.uuid5(uuid.NAMESPACE_URL, "omni:" + message.id)),
        "apns-collapse-id": message.id[:64],
    }
    if topic is not None:
        headers["apns-topic"] = topic
    return headers


def _retryable(status: int, code: str) -> Delivery | None:
    if status == 429:
        return Delivery("failed", reason=f"rate_limited:{code}", retry=True)
    if status >= 500:
        return Delivery("failed", reason=f"unavailable:{code}", retry=True)
    if status in (401, 403):
        # Our credentials, not the message: worth retrying once they are fixed/rotated.
        return Delivery("failed", reason=f"push_auth_failed:{code}", retry=True)
    return None


def _apns_outcome(status: int, answer: Any, apns_id: str | None) -> Delivery:
    if 200 <= status < 300:
        return Delivery("sent", channel_message_id=apns_id)
    reason = answer.get("reason") if isinstance(answer, dict) else None
    code = str(reason or status)
    if status == 410 or reason in _INVALID_APNS:
        return Delivery("failed", reason="invalid_token")
    return _retryable(status, code) or Delivery("failed", reason=f"rejected:{code}")


def _fcm_outcome(status: int, answer: Any) -> Delivery:
    if 200 <= status < 300:
        name = answer.get("name") if isinstance(answer, dict) else None
        return Delivery("sent", channel_message_id=name if isinstance(name, str) else None)
    error = answer.get("error") if isinstance(answer, dict) else None
    error = error if isinstance(error, dict) else {}
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    error_codes = {str(d["errorCode"]) for d in details if d.get("errorCode")}
    violations = [v for d in details for v in d.get("fieldViolations") or [] if isinstance(v, dict)]
    code = next(iter(sorted(error_codes)), None) or str(error.get("status") or status)
    if error_codes & _INVALID_FCM:
        return Delivery("failed", reason="invalid_token")
    if error.get("status") == "INVALID_ARGUMENT" and (
        any(v.get("field") == "message.token" for v in violations)
        or "registration token" in str(error.get("message", "")).lower()
    ):
        return Delivery("failed", reason="invalid_token")
    return _retryable(status, code) or Delivery("failed", reason=f"rejected:{code}")
