"""Twilio Programmable Voice: the phone channel.

Upstream API: Twilio Programmable Voice webhooks and TwiML
(https://www.twilio.com/docs/usage/webhooks/voice-webhooks, https://www.twilio.com/docs/voice/twiml).
Twilio calls omni synchronously, form-encoded, and every answer is a TwiML document:

    POST /channels/voice/twilio          incoming call (the number's Voice URL)
    POST /channels/voice/twilio/gather   <Gather action>: what the caller said or keyed
    POST /channels/voice/twilio/status   StatusCallback: call progress, in any order
    POST /channels/voice/twilio/dial     <Dial action>: how the transfer to an agent ended

Signature scheme: `X-Twilio-Signature`, checked by `omni.twilio.TwilioSignature`, the one
implementation every Twilio channel shares (public URL + sorted decoded params,
HMAC-SHA1 with the auth token, base64; with and without the port; `bodySHA256`).

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

from collections.abc import Sequence
from typing import Final
from urllib.parse import parse_qsl, urlencode

from adapters.voice.twiml import dial, dial_target, empty, gather, hangup, redirect
from adapters.voice.webhooks import TERMINAL_STATUSES, CallWebhook, WebhookKind, read_webhook
from omni.channel import ChannelEvent, InboundRequest
from omni.errors import BadRequest, ConfigError
from omni.settings import Secret
from omni.twilio import FORM, TwilioSignature, first_values, form_params, media_type

__all__ = [
    "CallWebhook",
    "VoiceAdapter",
    "dial",
    "empty",
    "gather",
    "hangup",
    "redirect",
    "status_supersedes",
]

CHANNEL: Final = "voice"
BASE_PATH: Final = "/channels/voice/twilio"


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
        if agent_number and not dial_target(agent_number):
            raise ConfigError(
                "voice: agent_number must be E.164 (+14155550142), client:<name> or sip:<uri>"
            )
        try:
            self._signature = TwilioSignature(token, public_url)
        except ConfigError as exc:
            raise ConfigError(f"voice: {exc}") from None
        self.public_url = self._signature.public_url
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
        """The URL Twilio signed: the public URL, then the path and query as received."""
        return self._signature.signed_url(url)

    def verify(self, request: InboundRequest) -> None:
        """Raise `Unauthenticated` unless X-Twilio-Signature matches (omni.twilio)."""
        self._signature.verify(
            method=request.method, url=request.url, headers=request.headers, body=request.body
        )

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
            elif media_type(request.headers) == FORM:
                params = first_values(form_params(request.body))
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
