"""WhatsApp's error codes, as the reason on a reply's delivery status. Pure.

Graph answers a refused send with `{"error": {"message", "type", "code", "error_data":
{"details"}, "fbtrace_id"}}`, and a send it accepted but could not deliver comes back
later as a `failed` status with `errors: [{"code", "title", "message", "error_data":
{"details"}}]`. Both become a reason `<slug>: <code> <title>: <details>`: the slug is
what a program branches on (Meta says to branch on the code, not the title), the rest
is for the agent reading the history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from omni.channel import Delivery

REASON_OUTSIDE_WINDOW = "outside_window"  # 24 h since the customer wrote: a template only
REASON_UNDELIVERABLE = "undeliverable"  # not on WhatsApp, old app, or Meta held it back
REASON_RATE_LIMITED = "rate_limited"  # retried later
REASON_TOKEN_EXPIRED = "token_expired"  # noqa: S105 - a reason slug: make a new token
REASON_PERMISSION = "permission_denied"
REASON_RECIPIENT_NOT_ALLOWED = "recipient_not_allowed"  # a test number's allowed list
REASON_TEMPLATE = "template_error"
REASON_MEDIA = "media_error"
REASON_ACCOUNT = "account_problem"  # the business account or number needs attention
REASON_BAD_REQUEST = "bad_request"
REASON_UPSTREAM = "upstream_error"  # Graph 5xx or a transient error: retried
REASON_TIMEOUT = "timeout"
REASON_NETWORK = "network_error"
REASON_UNSENDABLE = "unsendable"  # the reply cannot be expressed on WhatsApp
REASON_NOT_CONFIGURED = "not_configured"
REASON_FAILED = "failed"  # a code omni does not know

# code -> (slug, worth retrying)
_CODES: Mapping[int, tuple[str, bool]] = {
    131047: (REASON_OUTSIDE_WINDOW, False),  # re-engagement message
    470: (REASON_OUTSIDE_WINDOW, False),  # the on-premise API's code for it
    131026: (REASON_UNDELIVERABLE, False),
    131049: (REASON_UNDELIVERABLE, False),  # held back for "ecosystem engagement"
    130429: (REASON_RATE_LIMITED, True),  # throughput
    131056: (REASON_RATE_LIMITED, True),  # (business, customer) pair rate
    131048: (REASON_RATE_LIMITED, True),  # spam rate limit
    80007: (REASON_RATE_LIMITED, True),
    4: (REASON_RATE_LIMITED, True),
    613: (REASON_RATE_LIMITED, True),
    190: (REASON_TOKEN_EXPIRED, False),
    0: (REASON_TOKEN_EXPIRED, False),  # AuthException: the token is not accepted
    3: (REASON_PERMISSION, False),
    10: (REASON_PERMISSION, False),
    200: (REASON_PERMISSION, False),
    131005: (REASON_PERMISSION, False),
    131030: (REASON_RECIPIENT_NOT_ALLOWED, False),
    131052: (REASON_MEDIA, False),
    131053: (REASON_MEDIA, False),
    131031: (REASON_ACCOUNT, False),
    131042: (REASON_ACCOUNT, False),
    133010: (REASON_ACCOUNT, False),
    368: (REASON_ACCOUNT, False),
    1: (REASON_UPSTREAM, True),
    2: (REASON_UPSTREAM, True),
    131000: (REASON_UPSTREAM, True),
    131016: (REASON_UPSTREAM, True),
    100: (REASON_BAD_REQUEST, False),
    131008: (REASON_BAD_REQUEST, False),
    131009: (REASON_BAD_REQUEST, False),
    131051: (REASON_BAD_REQUEST, False),
}
_DETAIL_MAX = 300


def classify(code: int | None) -> tuple[str, bool]:
    """The reason slug of an error code, and whether a later attempt may succeed."""
    if code is None:
        return REASON_FAILED, False
    if code in _CODES:
        return _CODES[code]
    if 132000 <= code < 133000:
        return REASON_TEMPLATE, False
    return REASON_FAILED, False


def reason_code(reason: str | None) -> str | None:
    """The slug a reason starts with."""
    return reason.split(":", 1)[0] if reason else None


def describe(error: Mapping[str, Any]) -> tuple[str, bool]:
    """One Graph error object as a reason, and whether it is worth retrying."""
    code = error.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    slug, retry = classify(code)
    if error.get("is_transient") is True:
        retry = True
    words = [str(code) if code is not None else "no code"]
    title = error.get("title") or error.get("message")
    if isinstance(title, str) and title:
        words.append(title)
    details = error.get("error_data")
    details = details.get("details") if isinstance(details, dict) else None
    text = " ".join(words)
    if isinstance(details, str) and details and details != title:
        text = f"{text}: {details}"
    return f"{slug}: {text}"[:_DETAIL_MAX], retry


def status_reason(errors: Sequence[Mapping[str, Any]]) -> str:
    """The reason of a `failed` status (its first error)."""
    return describe(errors[0])[0] if errors else f"{REASON_FAILED}: WhatsApp gave no reason"


def graph_failure(status: int, data: Any) -> Delivery:
    """A refused Send API call (its HTTP status and decoded body) as a failed Delivery."""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        reason, retry = describe(error)
        if status >= 500 and reason_code(reason) == REASON_FAILED:
            reason, retry = f"{REASON_UPSTREAM}: {reason.split(': ', 1)[1]}", True
        return Delivery("failed", reason=reason, retry=retry)
    if status == 429:
        return Delivery("failed", reason=f"{REASON_RATE_LIMITED}: HTTP 429", retry=True)
    if status >= 500 or status == 408:
        return Delivery("failed", reason=f"{REASON_UPSTREAM}: HTTP {status}", retry=True)
    return Delivery("failed", reason=f"{REASON_BAD_REQUEST}: HTTP {status}")
