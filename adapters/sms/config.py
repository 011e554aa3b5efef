"""The `[sms]` section (Twilio Messaging), read with the settings' own field readers.

[twilio] auth_token          signs Twilio's webhooks to omni and authenticates the
                             Messaging API calls (the account's primary Auth Token)
[server] public_url          the URL Twilio calls omni at: signatures cover it
[sms] account_sid            the Twilio account (AC…) the Messaging API is called as
                             (or [twilio] account_sid, when [sms] names none)
[sms] from_number            the number replies are sent from (E.164), or
[sms] messaging_service_sid  a Messaging Service (MG…) that picks the sender instead
[sms] api_url                Twilio's REST API base URL (tests point it elsewhere)
[sms] help_text              the answer to HELP / INFO; empty: omni answers nothing
[sms] max_segments           a reply longer than this many segments is refused
[sms] status_callback        ask Twilio for delivery receipts on /channels/sms/status
"""

from __future__ import annotations

from dataclasses import dataclass

from omni.errors import ConfigError
from omni.phones import normalize_phone
from omni.settings import (
    NO_SECRET,
    Secret,
    Settings,
    read_bool,
    read_int,
    read_secret,
    read_str,
    read_url,
)

API_URL = "https://api.twilio.com"
# 10 segments: 1530 GSM-7 characters, near Twilio's 1600-character body limit. At most 24
# (1600 UCS-2 characters); Twilio itself recommends 320 characters or fewer.
MAX_SEGMENTS = 10


@dataclass(frozen=True)
class SmsConfig:
    auth_token: Secret = NO_SECRET
    public_url: str = ""
    account_sid: str = ""
    from_number: str = ""
    messaging_service_sid: str = ""
    api_url: str = API_URL
    help_text: str = ""
    max_segments: int = MAX_SEGMENTS
    status_callback: bool = True

    @property
    def can_send(self) -> bool:
        return bool(self.auth_token and self.account_sid and self.sender)

    @property
    def sender(self) -> str:
        return self.messaging_service_sid or self.from_number


def sms_config(settings: Settings) -> SmsConfig:
    section = settings.sections.get("sms", {})
    from_number = read_str(section, "sms.from_number", "")
    if from_number:
        phone = normalize_phone(from_number)
        if phone is None:
            raise ConfigError(f"sms.from_number: must be an E.164 number, not {from_number!r}")
        from_number = phone
    # The account is Twilio's, so [twilio] account_sid is read when [sms] has none.
    twilio = settings.sections.get("twilio", {})
    account_sid = read_str(section, "sms.account_sid", "") or read_str(
        twilio, "twilio.account_sid", ""
    )
    if account_sid and not (account_sid.startswith("AC") and len(account_sid) == 34):
        raise ConfigError("sms.account_sid: must be the account's SID, AC and 32 characters")
    service = read_str(section, "sms.messaging_service_sid", "")
    if service and not (service.startswith("MG") and len(service) == 34):
        raise ConfigError("sms.messaging_service_sid: must be MG and 32 characters")
    return SmsConfig(
        # The account's token is the [twilio] section's, shared with voice.
        auth_token=read_secret(twilio, "twilio.auth_token"),
        public_url=settings.server.public_url,
        account_sid=account_sid,
        from_number=from_number,
        messaging_service_sid=service,
        api_url=read_url(section, "sms.api_url", API_URL),
        help_text=read_str(section, "sms.help_text", ""),
        max_segments=read_int(section, "sms.max_segments", MAX_SEGMENTS, low=1, high=24),
        status_callback=read_bool(section, "sms.status_callback", True),
    )
