"""The website chat widget: omni's own protocol, modelled on Chatwoot, Intercom, Sunshine
Conversations and Bot Framework Direct Line 3.0 (CHANNELS.md 3.1-3.5).

Signature schemes: sessions are HS256 JWTs under the server's session secret; login
(identify) is verified by `identifier_hash = hex(HMAC-SHA256(identity_secret,
identifier))`; both compared in constant time (`adapters.chat.sessions`). The socket's
Origin is checked against the operator's list (`allowed_origin`).

Routes the core serves with this adapter:

    POST    /channels/web/sessions   `session_request` (start | renew | identify)
    POST    /channels/web/messages   `parse` -> [Received]; Bearer session token
    GET     /channels/web/messages   `parse_catch_up` -> CatchUp (`?after=`, `?limit=`)
    GET     /channels/web/ws         `authenticate` (`?token=`), `allowed_origin`, then
                                     text frames through `parse_frame` / `render_*`
    OPTIONS /channels/web/…          CORS preflight, for the origins `allowed_origin` allows

The message body, the catch-up page and the socket frames are the ones the mobile app
speaks too, documented once in `adapters.chat.protocol`.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from adapters.chat.protocol import (
    FRAME_MAX,
    ClientChannel,
    InboundFrame,
    Ping,
    Resume,
    Staff,
    Typing,
    TypingState,
)

# The frame types live with the client protocol; importing them from here still works.
__all__ = [
    "FRAME_MAX",
    "InboundFrame",
    "Ping",
    "Resume",
    "Staff",
    "Typing",
    "TypingState",
    "WebAdapter",
    "allowed_origin",
    "origin_entry_ok",
]


class WebAdapter(ClientChannel):
    """The web widget channel. Pure: secrets in, parsed events and frames out."""

    channel = "web"


def _origin(value: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or an allowed-origin entry; None if not one."""
    value = value.strip().lower()
    if not value.isascii():
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.username or parts.password or parts.query or parts.fragment:
        return None
    if parts.path not in ("", "/"):
        return None
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname, port if port is not None else default


def origin_entry_ok(entry: str) -> bool:
    """Whether an allowed-origins entry can ever match (a typo like `localhost:8080`,
    without its scheme, never would): `*`, an origin, or `scheme://*.domain`."""
    entry = entry.strip()
    return entry == "*" or _origin(entry.replace("://*.", "://", 1)) is not None


def allowed_origin(origin: str | None, allowed: Iterable[str]) -> bool:
    """Whether a browser `Origin` may use the widget routes (CORS, WebSocket handshake).

    Entries are origins (`https://shop.example.com`, port optional when default),
    `https://*.example.com` for any subdomain (not the bare domain), or `*` for any
    http(s) origin. A missing origin, `null` (sandboxed frames, files) or anything that
    is not scheme://host[:port] is refused: the widget only runs in a browser page.
    """
    if not origin:
        return False
    seen = _origin(origin)
    if seen is None:
        return False
    scheme, host, port = seen
    for entry in allowed:
        entry = entry.strip()
        if entry == "*":
            return True
        wildcard = "://*." in entry
        want = _origin(entry.replace("://*.", "://", 1) if wildcard else entry)
        if want is None or want[0] != scheme or want[2] != port:
            continue
        if host.endswith("." + want[1]) if wildcard else host == want[1]:
            return True
    return False
