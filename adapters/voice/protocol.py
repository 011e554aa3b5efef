"""Twilio Programmable Voice: the phone channel.

Upstream API: Twilio Programmable Voice webhooks and TwiML
(https://www.twilio.com/docs/usage/webhooks/voice-webhooks, https://www.twilio.com/docs/voice/twiml).
Twilio calls omni synchronously, form-encoded, and every answer is a TwiML document:

    POST /channels/voice/twilio          incoming call (the number's Voice URL)
    POST /channels/voice/twilio/gather   <Gather action>: what the caller said or keyed
    POST /channels/voice/twilio/status   StatusCallback: call progress, in any order
    POST /channels/voice/twilio/dial     <Dial action>: how the transfer to an agent ended

Signature scheme (https://www.twilio.com/docs/usage/webhooks/webhooks-security):
`X-Twilio-Signature` is base64(HMAC-SHA1(auth token, URL + params)), where URL is the public
URL Twilio requested, query string included, and params are every POST parameter, decoded,
sorted by name (a repeated name's distinct values sorted too), each name and value appended
with no delimiter. The URL is accepted with and without its port (Twilio drops :443 for voice
over https and keeps ports elsewhere), as twilio-python's RequestValidator does. A URL that
carries `bodySHA256` (Twilio's JSON-body variant) is signed alone, and the raw body must hash
to that value. Signatures are compared with `hmac.compare_digest`.

What a webhook becomes (`VoiceAdapter.read`, or `parse` for the seam's event list):

    incoming call     Received: a message with no text and `voice.call_id`, metadata
                      voice_event="call_started", id "<CallSid>:call". It resolves the caller
                      (From, or To on an outbound call) and puts the call on the timeline.
    gather, input     Received: the transcript (or the digits) as text, `voice` filled in,
                      id "<CallSid>:gather:<turn>" so a retried callback is stored once.
    gather, empty     Skipped; `CallWebhook.empty` is true (re-prompt once, then hang up).
    status, dial      Skipped; the call facts (status, SequenceNumber, Timestamp, durations,
                      DialCallStatus) are on the `CallWebhook` for the core's call state.

Turns: every Gather action URL this module renders carries `turn=N` (and `reprompt=1` on the
one re-prompt), so the gather callback names its turn without any state in omni.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit

from adapters.voice.twiml import dial, dial_target, empty, gather, hangup, redirect
from adapters.voice.webhooks import (
    TERMINAL_STATUSES,
    CallWebhook,
    WebhookKind,
    first_values,
    form_pairs,
    media_type,
    read_webhook,
)
from omni.channel import ChannelEvent, InboundRequest, header
from omni.errors import BadRequest, ConfigError, Unauthenticated
from omni.settings import Secret

__all__ = [
    "TWIML_CONTENT_TYPE",
    "CallWebhook",
    "VoiceAdapter",
    "dial",
    "empty",
    "gather",
    "hangup",
    "redirect",
    "signature",
    "status_supersedes",
]

CHANNEL: Final = "voice"
SIGNATURE_HEADER: Final = "X-Twilio-Signature"
TWIML_CONTENT_TYPE: Final = "text/xml"
BASE_PATH: Final = "/channels/voice/twilio"


_FORM = "application/x-www-form-urlencoded"
_KINDS: dict[str, WebhookKind] = {
    "": "call",
    "/gather": "gather",
    "/status": "status",
    "/dial": "dial",
}
_RANK = {"queued": 0, "initiated": 0, "ringing": 1, "in-progress": 2, "answered": 2}


def status_supersedes(
    new_status: str, new_sequence: int | None, old_status: str | None, old_sequence: int | None
) -> bool:
    """Whether a call status should replace the one held. Status callbacks are separate
    requests that arrive in any order: order by SequenceNumber when both have one, else by
    progress; a finished call never goes back to ringing."""
    if old_status is None:
        return True
    if old_status in TERMINAL_STATUSES and new_status not in TERMINAL_STATUSES:
        return False
    if new_sequence is not None and old_sequence is not None:
        return new_sequence > old_sequence
    return _rank(new_status) > _rank(old_status)


def _rank(status: str) -> int:
    return 3 if status in TERMINAL_STATUSES else _RANK.get(status, 0)


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


class VoiceAdapter:
    """The voice channel over Twilio. Pure: configuration in, no I/O, no Redis."""

    channel = CHANNEL

    def __init__(
        self,
        auth_token: str | Secret,
        agent_number: str | None,
        public_url: str,
        *,
        language: str = "en-US",
        say_voice: str | None = "Polly.Joanna",
        speech_model: str | None = None,
        dial_timeout: int = 20,
        base_path: str = BASE_PATH,
    ) -> None:
        token = auth_token.reveal() if isinstance(auth_token, Secret) else auth_token
        if not token:
            raise ConfigError("voice: auth_token is empty")
        if agent_number and not dial_target(agent_number):
            raise ConfigError(
                "voice: agent_number must be E.164 (+14155550142), client:<name> or sip:<uri>"
            )
        parts = urlsplit(public_url)
        try:
            port = parts.port
        except ValueError:
            raise ConfigError("voice: public_url has a bad port") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ConfigError("voice: public_url must be http(s)://host[:port][/prefix]")
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
        self._token = token
        self.agent_number = agent_number or None  # None: no one to transfer calls to
        self.language = language
        self.say_voice = say_voice
        self.speech_model = speech_model
        self.dial_timeout = dial_timeout
        self.base_path = "/" + base_path.strip("/")

    def __repr__(self) -> str:
        return f"VoiceAdapter(public_url={self.public_url!r}, auth_token='****')"

    # -- inbound ----------------------------------------------------------------------

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

    def verify(self, request: InboundRequest) -> None:
        """Raise `Unauthenticated` unless X-Twilio-Signature matches (see the module doc)."""
        given = header(request.headers, SIGNATURE_HEADER)
        if not given:
            raise Unauthenticated(f"missing {SIGNATURE_HEADER}")
        path_query = self.signed_url(request.url)[len(self.public_url) :]
        query = first_values(parse_qsl(path_query.partition("?")[2], keep_blank_values=True))
        params: list[tuple[str, str]] = []
        try:
            if "bodySHA256" in query:
                digest = hashlib.sha256(request.body).hexdigest()
                if not hmac.compare_digest(digest.encode(), query["bodySHA256"].encode()):
                    raise Unauthenticated("body does not match bodySHA256")
            elif request.body:
                if request.method.upper() != "POST" or media_type(request.headers) != _FORM:
                    raise Unauthenticated("body is neither form-encoded nor covered by bodySHA256")
                params = form_pairs(request.body)
            expected = given.encode()
            matched = False
            for form in self._forms:
                computed = signature(self._token, form + path_query, params).encode()
                matched |= hmac.compare_digest(computed, expected)
        except (ValueError, UnicodeError):
            raise Unauthenticated(f"{SIGNATURE_HEADER} cannot be checked") from None
        if not matched:
            raise Unauthenticated(f"{SIGNATURE_HEADER} does not match")

    def parse(self, request: InboundRequest) -> list[ChannelEvent]:
        return list(self.read(request).events)

    def read(self, request: InboundRequest) -> CallWebhook:
        """Read one webhook (the route is taken from the path). Raise `BadRequest` for a
        body that cannot be read as one; never anything else."""
        path, _, query = self.signed_url(request.url)[len(self.public_url) :].partition("?")
        path = path.rstrip("/")
        kind = _KINDS.get(path[len(self.base_path) :]) if path.startswith(self.base_path) else None
        if kind is None:
            raise BadRequest("not a Twilio voice webhook path")
        try:
            ours = first_values(parse_qsl(query, keep_blank_values=True, errors="strict"))
            if request.method.upper() == "GET":  # Twilio's GET puts its parameters in the query
                params = ours
            elif media_type(request.headers) == _FORM:
                params = first_values(form_pairs(request.body))
            else:
                raise BadRequest("Twilio voice webhooks are form-encoded")
        except (ValueError, UnicodeError):
            raise BadRequest("the webhook cannot be decoded") from None
        return read_webhook(kind, params, ours)

    # -- TwiML for the routes -----------------------------------------------------------

    def url(self, sub: str = "", **query: str | int) -> str:
        """An absolute URL under the voice base path, e.g. url("/gather", turn=2)."""
        q = urlencode(query)
        return f"{self.public_url}{self.base_path}{sub}" + (f"?{q}" if q else "")

    def speak(self, text: str | Sequence[str], *, turn: int, reprompt: bool = False) -> str:
        """Say `text` and listen for the caller's answer, which arrives as gather `turn`."""
        query = {"turn": turn, "reprompt": 1} if reprompt else {"turn": turn}
        action = self.url("/gather", **query)
        return gather(
            text,
            action=action,
            language=self.language,
            voice=self.say_voice,
            speech_model=self.speech_model,
            fallthrough=action,
        )

    def greet(self, text: str) -> str:
        """The answer to an incoming call: the greeting, then listen (turn 1)."""
        return self.speak(text, turn=1)

    def on_empty(self, hook: CallWebhook, *, reprompt: str, goodbye: str) -> str:
        """After a gather with no input: re-prompt once, then say goodbye and hang up."""
        if hook.reprompted:
            return self.goodbye(goodbye)
        return self.speak(reprompt, turn=hook.next_turn, reprompt=True)

    def goodbye(self, text: str) -> str:
        return hangup(text, voice=self.say_voice, language=self.language)

    def transfer(self, say_first: str | None = None, *, turn: int | None = None) -> str:
        """Dial the agent number from the live call; Twilio then calls /dial."""
        if self.agent_number is None:
            raise ValueError("no agent_number is configured to transfer the call to")
        action = self.url("/dial") if turn is None else self.url("/dial", turn=turn)
        return dial(
            [self.agent_number],
            action=action,
            say_first=say_first,
            timeout=self.dial_timeout,
            voice=self.say_voice,
            language=self.language,
        )

    def redirect(self, sub: str = "", **query: str | int) -> str:
        return redirect(self.url(sub, **query))
