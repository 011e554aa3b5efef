"""omni's exceptions, one tree; the problem middleware maps them to RFC 9457 documents.

    OmniError                      base of everything omni raises on purpose
    ├── ConfigError                a bad setting at start-up (the CLI prints one line)
    ├── StoreError                 Redis said something we did not expect
    │   └── CorruptRecord          a stored record that does not decode
    └── ProblemError               answered to the client as application/problem+json
        ├── Moved                  308: a customer merged into another; Location names it
        ├── BadRequest             400: the request cannot be read (malformed JSON, cursor)
        ├── Unauthenticated        401: no API key, an unknown one, or a bad signature
        ├── Forbidden              403: the key's role may not do this
        ├── NotFound               404: no such customer or resource
        ├── MethodNotAllowed       405: the route exists, not with this method
        ├── Conflict               409: the request contradicts stored state
        ├── Gone                   410: it existed and is no more (an expired link token)
        ├── PreconditionFailed     412: If-Match names a version that is no longer current
        ├── PayloadTooLarge        413: body over [limits] body_max
        ├── UnsupportedMediaType   415: a body that is not JSON where JSON is required
        ├── ValidationFailed       422: well-formed JSON that breaks the schema or a limit
        ├── PreconditionRequired   428: a write that needs If-Match came without it
        ├── TooManyRequests        429: a rate limit ([limits]); Retry-After says when
        └── Unavailable            503: Redis cannot be reached, or the process is full

Each problem class carries its HTTP status and a stable `type` URI; instances carry the
human `detail` and, where it helps the client, the offending `field`.
"""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_BASE = "https://omni.dev/problems/"


class OmniError(Exception):
    """Base of every exception omni raises on purpose."""


class ConfigError(OmniError):
    """A setting is missing or malformed; the message names the setting."""


class StoreError(OmniError):
    """Redis answered in a way omni does not expect."""


class CorruptRecord(StoreError):
    """A stored record could not be decoded (wrong schema version or damaged bytes)."""


class ProblemError(OmniError):
    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        retry_after_s: int | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.retry_after_s = retry_after_s  # answered as Retry-After
        self.extra = extra

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug

    def to_problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.field is not None:
            body["field"] = self.field
        body.update(self.extra)
        return body


class Moved(ProblemError):
    """The customer was merged into `customer_id`: the same request there answers it."""

    status = 308
    slug = "merged"
    title = "Customer merged"

    def __init__(self, source: str, survivor: str) -> None:
        super().__init__(f"{source} was merged into {survivor}", customer_id=survivor)
        self.source = source
        self.survivor = survivor


class BadRequest(ProblemError):
    status = 400
    slug = "bad-request"
    title = "Bad request"


class Unauthenticated(ProblemError):
    status = 401
    slug = "unauthenticated"
    title = "Unauthenticated"


class Forbidden(ProblemError):
    status = 403
    slug = "forbidden"
    title = "Forbidden"


class NotFound(ProblemError):
    status = 404
    slug = "not-found"
    title = "Not found"


class MethodNotAllowed(ProblemError):
    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"


class Conflict(ProblemError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class Gone(ProblemError):
    status = 410
    slug = "gone"
    title = "Gone"


class PreconditionFailed(ProblemError):
    status = 412
    slug = "precondition-failed"
    title = "Precondition failed"


class PayloadTooLarge(ProblemError):
    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class UnsupportedMediaType(ProblemError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class ValidationFailed(ProblemError):
    status = 422
    slug = "validation"
    title = "Validation failed"


class PreconditionRequired(ProblemError):
    status = 428
    slug = "precondition-required"
    title = "Precondition required"


class TooManyRequests(ProblemError):
    status = 429
    slug = "rate-limited"
    title = "Too many requests"


class Unavailable(ProblemError):
    status = 503
    slug = "unavailable"
    title = "Service unavailable"


# Every problem status the API can answer, for the OpenAPI document.
PROBLEM_CLASSES: tuple[type[ProblemError], ...] = (
    BadRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    Gone,
    PreconditionFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    PreconditionRequired,
    TooManyRequests,
    Unavailable,
)
