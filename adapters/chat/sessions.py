"""Client sessions and identity verification for omni's own clients (web widget, mobile app).

Both first-party channels authenticate the same way, so the scheme lives here once and
`adapters.web` and `adapters.mobile` each hold a `SessionAuthority` bound to their channel.

Session token: a compact JWT (RFC 7519) signed with **HMAC-SHA256** (`alg` HS256) under the
channel's server secret. It is stateless: the core stores nothing to issue or check one.

    header  {"alg":"HS256","typ":"JWT"}
    claims  {"aud":"omni:<channel>","sub":<visitor id>,"uid":<verified user id, optional>,
             "iat":<seconds>,"exp":<seconds>,"jti":<random id>}

The signature is checked first, in constant time (`hmac.compare_digest`), against the
current secret and any previous ones (rotation); only then is the JSON read. A token
for another channel (`aud`), an expired one, or a forged one is `Unauthenticated`.
`jti` lets the core revoke one token (e.g. the anonymous token after a login) if it keeps
a deny list; nothing here needs one.

Identity verification (Intercom `user_hash` / Chatwoot `identifier_hash`): the customer's
own backend computes `hex(HMAC-SHA256(identity_secret, user_id))`, lowercase, and the
client sends it with the user id. It is compared in constant time; a mismatch is
`Unauthenticated`. There is no unverified identify: without a valid hash the visitor
stays anonymous (anonymous chat is always allowed).

Visitor ids are made here, never by the client: `vis_` and 26 Crockford base32 characters
carrying 130 random bits. A visitor id is only ever believed inside a token we signed.

Session requests (`POST /channels/<web|mobile>/sessions`, JSON; unknown fields ignored):

    {} or {"type":"start"}          a new anonymous visitor                  -> 201
    {"type":"renew"}                a fresh token for the bearer's session    -> 200
    {"type":"identify",             log in; with a bearer token the visitor   -> 200
     "identifier":"cust_000123",      is upgraded (`SessionGrant.previous` is
     "identifier_hash":"<hex>",       the anonymous session the core merges),
     "anonymous_id":"vis_…",          without one a new visitor is made.
     "traits":{"name","email","phone","locale"}}   (traits are unverified claims)

Logout is client-side: drop the token and `start` again, which makes a new visitor, so
the next person on a shared device inherits nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct

from omni.channel import InboundRequest, header
from omni.clock import iso, now_ms
from omni.errors import BadRequest, ConfigError, Unauthenticated, ValidationFailed
from omni.model import Locale
from omni.web_io import problem_field

SESSION_TTL_S = 30 * 24 * 3600
SESSION_SECRET_MIN_BYTES = 32
TOKEN_MAX = 4096
CLOCK_SKEW_S = 60
USER_PREFIX = "user:"

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_AT = re.compile(r" - at `\$[^`]*`$")
_HEADER = b'{"alg":"HS256","typ":"JWT"}'

T = TypeVar("T")

# A user id or visitor id: printable, no control characters; short enough that
# "user:" + id fits an identity's 256 characters.
UserId = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
VisitorId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


def decode_json(body: bytes | str, kind: type[T]) -> T:
    """Decode a client's JSON into `kind`: BadRequest if unreadable, ValidationFailed
    (naming the field, e.g. `device.push_token`) if it breaks the schema."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise ValidationFailed(_AT.sub("", str(exc)), field=problem_field(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None


def new_visitor_id() -> str:
    """`vis_` + 26 Crockford base32 characters of 130 random bits: unguessable."""
    value = secrets.randbits(130)
    chars = [_CROCKFORD[(value >> (5 * i)) & 31] for i in range(26)]
    return "vis_" + "".join(reversed(chars))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not _B64URL.match(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


class _Claims(Struct, frozen=True, omit_defaults=True):
    aud: str
    sub: str
    iat: int
    exp: int
    jti: str
    uid: str | None = None


class _Header(Struct, frozen=True):
    alg: str
    typ: str = "JWT"


@dataclass(frozen=True)
class Session:
    """A verified session: who the token says is on the other end."""

    channel: str
    visitor_id: str
    user_id: str | None
    issued_at_ms: int
    expires_at_ms: int
    token_id: str

    @property
    def identified(self) -> bool:
        return self.user_id is not None

    @property
    def external_id(self) -> str:
        """The customer's id on the channel: the visitor id while anonymous,
        `user:<user id>` once identified (the prefix keeps the brand's user ids and
        our visitor ids from ever colliding)."""
        return USER_PREFIX + self.user_id if self.user_id is not None else self.visitor_id


class Traits(Struct, frozen=True, omit_defaults=True):
    """Profile hints sent with identify. Unverified: the hash covers only the id."""

    name: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    email: Annotated[str, Meta(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] | None = None
    phone: Annotated[str, Meta(max_length=32, pattern=r"^\+?[0-9 ().-]{3,31}$")] | None = None
    locale: Locale | None = None


class SessionRequest(Struct, frozen=True):
    """`POST /channels/<web|mobile>/sessions` (see the module docstring)."""

    type: Literal["start", "renew", "identify"] = "start"
    identifier: UserId | None = None
    identifier_hash: Annotated[str, Meta(max_length=128)] | None = None
    anonymous_id: Annotated[str, Meta(max_length=64)] | None = None
    traits: Traits | None = None


@dataclass(frozen=True)
class SessionGrant:
    """What a session request produced: the core answers `render()` with `status`.

    `previous` is the anonymous session an identify upgraded: the core links
    (channel, previous.external_id) into the customer of (channel, session.external_id)
    (or merges the two customers) and may revoke `previous.token_id`."""

    kind: Literal["started", "renewed", "identified"]
    token: str
    session: Session
    previous: Session | None = None
    traits: Traits | None = None

    @property
    def status(self) -> int:
        return 201 if self.kind == "started" else 200

    def render(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "token": self.token,
            "visitor_id": self.session.visitor_id,
            "external_id": self.session.external_id,
            "expires_at": iso(self.session.expires_at_ms),
        }
        if self.session.user_id is not None:
            body["user_id"] = self.session.user_id
        return body


class IdentityVerifier:
    """`hex(HMAC-SHA256(secret, user_id))`, compared in constant time."""

    def __init__(self, secret: str | bytes) -> None:
        if not secret:
            raise ConfigError("identity_secret: must not be empty")
        self._secret = _key(secret)

    def user_hash(self, user_id: str) -> str:
        """The hash the brand's backend computes (also handy for tests and docs)."""
        return hmac.new(self._secret, user_id.encode(), hashlib.sha256).hexdigest()

    def verify(self, user_id: str, user_hash: str | None) -> None:
        # compare_digest on str refuses non-ASCII, so the shape is checked first.
        if not user_hash or not _HEX.match(user_hash):
            raise Unauthenticated(
                "identifier_hash must be the 64-character hex HMAC-SHA256 of the identifier",
                field="identifier_hash",
            )
        if not hmac.compare_digest(self.user_hash(user_id), user_hash.lower()):
            raise Unauthenticated(
                "identifier_hash does not match the identifier", field="identifier_hash"
            )


class SessionAuthority:
    """Issues and opens one channel's session tokens and verifies identify calls."""

    def __init__(
        self,
        channel: str,
        *,
        session_secret: str | bytes,
        identity_secret: str | bytes,
        session_ttl_s: int = SESSION_TTL_S,
        previous_session_secrets: Sequence[str | bytes] = (),
        clock: Callable[[], int] = now_ms,
    ) -> None:
        keys = [_key(session_secret), *(_key(s) for s in previous_session_secrets)]
        for i, key in enumerate(keys):
            if len(key) < SESSION_SECRET_MIN_BYTES:
                name = "session_secret" if i == 0 else f"previous_session_secrets[{i - 1}]"
                raise ConfigError(f"{name}: must be at least {SESSION_SECRET_MIN_BYTES} bytes")
        if session_ttl_s <= 0:
            raise ConfigError("session_ttl_s: must be positive")
        self.channel = channel
        self.audience = f"omni:{channel}"
        self.identity = IdentityVerifier(identity_secret)
        self.ttl_s = session_ttl_s
        self._keys = keys
        self._clock = clock

    # -- tokens ------------------------------------------------------------------

    def issue(
        self, visitor_id: str, now_ms: int | None = None, *, user_id: str | None = None
    ) -> str:
        """A signed token for `visitor_id` (and `user_id` once verified). ValueError
        for ids that no client could have been given (empty, control characters)."""
        msgspec.convert(visitor_id, VisitorId)  # ours, but never sign nonsense
        if user_id is not None:
            msgspec.convert(user_id, UserId)
        now_s = (self._clock() if now_ms is None else now_ms) // 1000
        claims = _Claims(
            aud=self.audience,
            sub=visitor_id,
            uid=user_id,
            iat=now_s,
            exp=now_s + self.ttl_s,
            jti=secrets.token_urlsafe(12),
        )
        signing_input = _b64(_HEADER) + "." + _b64(msgspec.json.encode(claims))
        signature = hmac.new(self._keys[0], signing_input.encode("ascii"), hashlib.sha256)
        return signing_input + "." + _b64(signature.digest())

    def open(self, token: str, now_ms: int | None = None) -> Session:
        """The session a token carries; Unauthenticated if forged, foreign or expired."""
        invalid = Unauthenticated("the session token is not valid; start a new session")
        if not token or len(token) > TOKEN_MAX or not token.isascii():
            raise invalid
        parts = token.split(".")
        if len(parts) != 3:
            raise invalid
        signing_input = (parts[0] + "." + parts[1]).encode("ascii")
        try:
            signature = _unb64(parts[2])
        except (ValueError, binascii.Error):
            raise invalid from None
        matched = False
        for key in self._keys:
            expected = hmac.new(key, signing_input, hashlib.sha256).digest()
            matched |= hmac.compare_digest(expected, signature)
        if not matched:
            raise invalid
        try:
            header = msgspec.json.decode(_unb64(parts[0]), type=_Header)
            claims = msgspec.json.decode(_unb64(parts[1]), type=_Claims)
        except (ValueError, binascii.Error, msgspec.DecodeError):
            raise invalid from None
        if header.alg != "HS256" or claims.aud != self.audience:
            raise invalid
        now = self._clock() if now_ms is None else now_ms
        if now >= claims.exp * 1000:
            raise Unauthenticated("the session token has expired; start a new session")
        if claims.iat * 1000 > now + CLOCK_SKEW_S * 1000:
            raise invalid
        return Session(
            channel=self.channel,
            visitor_id=claims.sub,
            user_id=claims.uid,
            issued_at_ms=claims.iat * 1000,
            expires_at_ms=claims.exp * 1000,
            token_id=claims.jti,
        )

    def bearer(self, request: InboundRequest) -> str | None:
        """The token a request carries: `Authorization: Bearer …`, else the `token`
        query parameter (browsers cannot set headers on a WebSocket)."""
        auth = header(request.headers, "authorization")
        if auth is not None:
            scheme, _, value = auth.strip().partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise Unauthenticated("send the session token as Authorization: Bearer <token>")
            return value.strip()
        return request.query.get("token") or None

    def authenticate(self, request: InboundRequest, now_ms: int | None = None) -> Session:
        token = self.bearer(request)
        if token is None:
            raise Unauthenticated("a session token is required (POST the sessions route first)")
        return self.open(token, now_ms)

    # -- session requests --------------------------------------------------------

    def grant(self, request: InboundRequest, now_ms: int | None = None) -> SessionGrant:
        """Answer `POST /channels/<channel>/sessions` (see the module docstring)."""
        now = self._clock() if now_ms is None else now_ms
        body = (
            decode_json(request.body, SessionRequest) if request.body.strip() else SessionRequest()
        )
        if body.type == "start":
            return self._granted("started", new_visitor_id(), None, now)
        if body.type == "renew":
            held = self.authenticate(request, now)
            return self._granted("renewed", held.visitor_id, held.user_id, now)
        if body.identifier is None:
            raise ValidationFailed("identify needs an identifier", field="identifier")
        self.identity.verify(body.identifier, body.identifier_hash)
        token = self.bearer(request)
        current = self.open(token, now) if token is not None else None
        if current is None or current.user_id not in (None, body.identifier):
            # No session, or another user's: a fresh visitor, so nothing is inherited.
            return self._granted(
                "identified", new_visitor_id(), body.identifier, now, None, body.traits
            )
        if body.anonymous_id not in (None, current.visitor_id):
            raise Unauthenticated(
                "anonymous_id is not the visitor of this session token", field="anonymous_id"
            )
        previous = current if current.user_id is None else None
        return self._granted(
            "identified", current.visitor_id, body.identifier, now, previous, body.traits
        )

    def _granted(
        self,
        kind: Literal["started", "renewed", "identified"],
        visitor_id: str,
        user_id: str | None,
        now: int,
        previous: Session | None = None,
        traits: Traits | None = None,
    ) -> SessionGrant:
        token = self.issue(visitor_id, now, user_id=user_id)
        return SessionGrant(kind, token, self.open(token, now), previous, traits)
