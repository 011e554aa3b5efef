"""Meta's webhook conventions, shared by the channels Meta delivers (Instagram, WhatsApp).

Both speak Graph webhooks: a GET subscription handshake (`hub.mode=subscribe`,
`hub.verify_token`, `hub.challenge` echoed back as text) and POSTed notifications signed
`X-Hub-Signature-256: sha256=<lowercase hex HMAC-SHA256 of the raw body, keyed with the
app secret>`. Meta signs its own escaped bytes, so the body is hashed exactly as
received and never re-serialized; digests are compared in constant time. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from omni.channel import header
from omni.errors import BadRequest, Forbidden, Unauthenticated
from omni.text import clean

SIGNATURE_HEADER = "X-Hub-Signature-256"
CHALLENGE_MAX = 256
_HEX64 = re.compile(r"[0-9a-f]{64}")


def hub_challenge(query: Mapping[str, str], verify_token: bytes, channel: str) -> str:
    """The challenge to echo as text/plain; Forbidden unless the mode is `subscribe` and
    the token is ours."""
    token = query.get("hub.verify_token", "")
    challenge = query.get("hub.challenge", "")
    if (
        query.get("hub.mode") != "subscribe"
        or not verify_token
        or not hmac.compare_digest(token.encode(), verify_token)
        or not 0 < len(challenge) <= CHALLENGE_MAX
    ):
        raise Forbidden(f"{channel} subscription handshake refused")
    return challenge


def verify_hub_signature(secrets: Sequence[bytes], headers: Mapping[str, str], body: bytes) -> None:
    """Unauthenticated unless X-Hub-Signature-256 is the HMAC of `body` under one of
    `secrets` (more than one while an app secret is being rotated)."""
    value = header(headers, SIGNATURE_HEADER)
    if value is None:
        raise Unauthenticated(f"missing {SIGNATURE_HEADER}")
    scheme, _, digest = value.partition("=")
    if scheme != "sha256" or not _HEX64.fullmatch(digest):
        raise Unauthenticated(f"malformed {SIGNATURE_HEADER}")
    if not body:
        raise Unauthenticated("empty body")
    matches = [
        hmac.compare_digest(hmac.new(s, body, hashlib.sha256).hexdigest(), digest)
        for s in secrets
        if s
    ]
    if not any(matches):
        raise Unauthenticated(f"{SIGNATURE_HEADER} does not match the body")


def notification(body: bytes, object_: str, channel: str) -> dict[str, Any]:
    """A signed notification's JSON, an object whose "object" is `object_`; BadRequest
    otherwise. NaN and Infinity are Python's JSON, not Meta's: a body holding one is refused."""
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"{channel} webhook body is not JSON") from exc
    if not isinstance(data, dict) or data.get("object") != object_:
        raise BadRequest(f'{channel} webhook body is not an object with "object":"{object_}"')
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def nested(data: dict[str, Any], outer: str, inner: str) -> Any:
    """`data[outer][inner]` of a payload, or None where either is missing or not an object."""
    value = data.get(outer)
    return value.get(inner) if isinstance(value, dict) else None


def payload_id(value: Any) -> str | None:
    """An id in a payload as text: Meta sends some as numbers, some as strings."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return clean(value) if isinstance(value, str) and value else None
