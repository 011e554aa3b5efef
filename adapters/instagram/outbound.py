"""Outbound to the Graph Send API, the pure part: quick replies as Instagram takes them,
and a Graph error turned into a `Delivery` whose reason starts with a `REASON_*` slug
(the requests themselves are rendered and sent by `adapters.instagram.protocol`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adapters.instagram.text import as_int
from omni.channel import Delivery
from omni.model import Payload
from omni.text import clean as clean_text
from omni.text import safe_cut

QUICK_REPLIES_MAX = 13
QUICK_REPLY_TITLE_MAX = 20
QUICK_REPLY_PAYLOAD_MAX = 1000

# Delivery.reason starts with one of these; the rest is a human detail.
REASON_OUTSIDE_WINDOW = "outside_window"  # the 24 h / 7 day window is closed: do not retry
REASON_RATE_LIMITED = "rate_limited"
REASON_TOKEN_EXPIRED = "token_expired"  # noqa: S105 - a reason slug; re-authorize the channel
REASON_TOKEN_INVALID = "token_invalid"  # noqa: S105 - a reason slug, as above
REASON_PERMISSION = "permission_denied"
REASON_RECIPIENT_UNAVAILABLE = "recipient_unavailable"
REASON_NO_MATCHING_USER = "no_matching_user"
REASON_BAD_REQUEST = "bad_request"
REASON_UPSTREAM = "upstream_error"  # Graph 5xx or a transient Graph error
REASON_TIMEOUT = "timeout"
REASON_NETWORK = "network_error"
REASON_UNSENDABLE = "unsendable"  # the message cannot be expressed on Instagram
REAUTH_REASONS = frozenset({REASON_TOKEN_EXPIRED, REASON_TOKEN_INVALID})

_RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80002, 80006})  # app, user, page, call, BUC
_WINDOW_SUBCODES = frozenset({2018278, 2534022})


def graph_failure(status: int, data: Any) -> Delivery:
    """Map a Graph error answer (HTTP status and decoded body) to a failed Delivery."""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        if status == 429:
            return Delivery("failed", reason=f"{REASON_RATE_LIMITED}: HTTP 429", retry=True)
        if status >= 500 or status == 408:
            return Delivery("failed", reason=f"{REASON_UPSTREAM}: HTTP {status}", retry=True)
        return Delivery("failed", reason=f"{REASON_BAD_REQUEST}: HTTP {status}")
    code, sub = as_int(error.get("code")), as_int(error.get("error_subcode"))
    text = error.get("message")
    detail = f"graph error {code}/{sub}: {text if isinstance(text, str) else ''}"[:300]
    retry = False
    if code == 10 and sub in _WINDOW_SUBCODES:
        slug = REASON_OUTSIDE_WINDOW
    elif code in _RATE_LIMIT_CODES or status == 429:
        slug, retry = REASON_RATE_LIMITED, True
    elif code in (190, 102):
        slug = REASON_TOKEN_EXPIRED if sub == 463 else REASON_TOKEN_INVALID
    elif code == 551:
        slug = REASON_RECIPIENT_UNAVAILABLE
    elif code in (1, 2) or error.get("is_transient") is True or status >= 500:
        slug, retry = REASON_UPSTREAM, True
    elif code == 100 and sub == 2018001:
        slug = REASON_NO_MATCHING_USER
    elif code in (10, 200, 230) or (code is not None and 200 <= code < 300):
        slug = REASON_PERMISSION
    else:
        slug = REASON_BAD_REQUEST
    return Delivery("failed", reason=f"{slug}: {detail}", retry=retry)


def render_quick_replies(options: Sequence[Payload]) -> list[dict[str, str]]:
    """The Send API's quick replies; a button without a title shows its payload."""
    if len(options) > QUICK_REPLIES_MAX:
        raise ValueError(f"at most {QUICK_REPLIES_MAX} quick replies")
    replies = []
    for option in options:
        payload = clean_text(option.payload)
        title = clean_text(option.title or payload)
        if not payload:
            raise ValueError("each quick reply needs a payload")
        if len(payload) > QUICK_REPLY_PAYLOAD_MAX:
            raise ValueError(
                f"a quick reply payload is at most {QUICK_REPLY_PAYLOAD_MAX} characters"
            )
        title = title[: safe_cut(title, QUICK_REPLY_TITLE_MAX) or QUICK_REPLY_TITLE_MAX]
        replies.append({"content_type": "text", "title": title, "payload": payload})
    return replies
