"""The voice channel's section, `[twilio]` (named after the provider, as it always was):
the account's auth token, where to transfer a caller, and how the bot speaks."""

from __future__ import annotations

from dataclasses import dataclass

from omni.errors import ConfigError
from omni.settings import NO_SECRET, Secret, Settings, read_secret, read_str

NAME = "voice"
SECTION = "twilio"


@dataclass(frozen=True)
class TwilioSettings:
    auth_token: Secret = NO_SECRET
    agent_number: str = ""
    language: str = "en-US"
    voice: str = "Polly.Joanna"


def read(settings: Settings) -> TwilioSettings:
    """The section as configured; `ConfigError` names a bad setting."""
    section = settings.sections.get(SECTION, {})
    agent = read_str(section, "twilio.agent_number", "")
    if agent and not agent.startswith(("+", "client:", "sip:")):
        raise ConfigError("twilio.agent_number: must be E.164 (+…), client:<name> or sip:<uri>")
    return TwilioSettings(
        auth_token=read_secret(section, "twilio.auth_token"),
        agent_number=agent,
        language=read_str(section, "twilio.language", "en-US"),
        voice=read_str(section, "twilio.voice", "Polly.Joanna"),
    )
