"""What every Twilio channel shares (voice and SMS): checking `X-Twilio-Signature`, and
reading Twilio's form-encoded webhooks. Pure: no I/O, no Redis, no web server.

Signature scheme (https://www.twilio.com/docs/usage/webhooks/webhooks-security):
`X-Twilio-Signature` is base64(HMAC-SHA1(auth token, URL + params)), where URL is the public
URL Twilio requested, query string included, and params are every POST parameter, decoded,
sorted by name (a repeated name's distinct values sorted too), each name and value appended
with no delimiter. The URL is accepted with and without its port (Twilio drops :443 for voice
over https and keeps ports elsewhere), as twilio-python's RequestValidator does. A URL that
carries `bodySHA256` (Twilio's JSON-body variant) is signed alone, and the raw body must hash
to that value. Signatures are compared with `hmac.compare_digest`. Twilio adds parameters
without notice, so every parameter received is signed, never a fixed list.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from omni.channel import header
from omni.errors import ConfigError, Unauthenticated

SIGNATURE_HEADER: Final = "X-Twilio-Signature"
FORM: Final = "application/x-www-form-urlencoded"
TWIML_CONTENT_TYPE: Final = "text/xml"  # what a webhook's TwiML answer is sent as
MAX_PARAMS: Final = 500


def signature(auth_token: str, url: str, params: Iterable[tuple[str, str]] = ()) -> str:
    """X-Twilio-Signature for `url` and decoded POST `params`, exactly as Twilio computes it."""
    grouped: dict[str, set[str]] = {}
    for name, value in params:
        grouped.setdefault(name, set()).add(value)
    payload = url + "".join(
        name + value for name in sorted(grouped) for value in sorted(grouped[name])
    )
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


class TwilioSignature:
    """The check of one Twilio account's webhooks to omni's public URL. `ConfigError`
    messages name `public_url` and `auth_token`; callers say which settings those are."""

    def __init__(self, auth_token: str, public_url: str) -> None:
        if not auth_token:
            raise ConfigError("auth_token is empty")
        parts = urlsplit(public_url)
        try:
            port = parts.port
        except ValueError:
            raise ConfigError("public_url has a bad port") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ConfigError("public_url must be http(s)://host[:port][/prefix]")
        host = parts.netloc.rpartition("@")[2]  # Twilio drops user:pass@ before signing
        if port is not None:
            host = host[: host.rfind(":")]
        prefix = parts.path.rstrip("/")
        default = 443 if parts.scheme == "https" else 80
        bare = f"{parts.scheme}://{host}{prefix}"
        ported = f"{parts.scheme}://{host}:{port or default}{prefix}"
        self.public_url = ported if port not in (None, default) else bare
        # The forms a signature is checked against, as twilio-python's add_port/remove_port.
        self._forms = (bare, ported)
        self._token = auth_token

    def __repr__(self) -> str:
        return f"TwilioSignature(public_url={self.public_url!r}, auth_token='****')"

    def signed_url(self, url: str) -> str:
        """The URL Twilio signed: the public URL, then the path and query as received.
        `url` may be the URL omni saw (any host) or just its path and query."""
        url = url.partition("#")[0]
        for form in self._forms:
            if url == form or url.startswith((form + "/", form + "?")):
                return self.public_url + url[len(form) :]
        if "://" in url:  # another origin (omni behind a proxy): keep the path and query
            rest = url.partition("://")[2]
            cuts = [i for i in (rest.find("/"), rest.find("?")) if i >= 0]
            url = rest[min(cuts) :] if cuts else ""
        return self.public_url + (url if url.startswith("/") else "/" + url)

    def path_query(self, url: str) -> str:
        """The path and query of `url` below the public URL."""
        return self.signed_url(url)[len(self.public_url) :]

    def verify(self, *, method: str, url: str, headers: Mapping[str, str], body: bytes) -> None:
        """Raise `Unauthenticated` unless X-Twilio-Signature matches (see the module doc)."""
        given = header(headers, SIGNATURE_HEADER)
        if not given:
            raise Unauthenticated(f"missing {SIGNATURE_HEADER}")
        path_query = self.path_query(url)
        query = first_values(parse_qsl(path_query.partition("?")[2], keep_blank_values=True))
        params: list[tuple[str, str]] = []
        try:
            if "bodySHA256" in query:
                digest = hashlib.sha256(body).hexdigest()
                if not hmac.compare_digest(digest.encode(), query["bodySHA256"].encode()):
                    raise Unauthenticated("body does not match bodySHA256")
            elif body:
                if method.upper() != "POST" or media_type(headers) != FORM:
                    raise Unauthenticated("body is neither form-encoded nor covered by bodySHA256")
                params = form_params(body)
            expected = given.encode()
            matched = False
            for form in self._forms:
                computed = signature(self._token, form + path_query, params).encode()
                matched |= hmac.compare_digest(computed, expected)
        except (ValueError, UnicodeError):
            raise Unauthenticated(f"{SIGNATURE_HEADER} cannot be checked") from None
        if not matched:
            raise Unauthenticated(f"{SIGNATURE_HEADER} does not match")


def form_params(body: bytes) -> list[tuple[str, str]]:
    """Decoded form parameters; ValueError (UnicodeError included) when they cannot be."""
    text = body.decode()
    return parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=MAX_PARAMS)


def first_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The first value of each name (Twilio's webhooks do not repeat names)."""
    params: dict[str, str] = {}
    for name, value in pairs:
        params.setdefault(name, value)
    return params


def media_type(headers: Mapping[str, str]) -> str:
    return (header(headers, "Content-Type") or "").partition(";")[0].strip().lower()
