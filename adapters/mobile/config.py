"""The `[mobile]` section: the app's session and login secrets and where pushes go."""

from __future__ import annotations

from dataclasses import dataclass

from omni.settings import NO_SECRET, Secret, Settings, read_secret, read_str, read_url

NAME = "mobile"


@dataclass(frozen=True)
class MobileSettings:
    identity_secret: Secret = NO_SECRET
    session_secret: Secret = NO_SECRET
    push_url: str = ""
    # Push (optional): the bearer the push endpoint expects (an APNs provider JWT, an FCM
    # OAuth token, or a relay's key), the FCM project, the APNs topic (bundle id) for
    # devices that do not name their app, and the APNs sandbox base URL.
    push_auth: Secret = NO_SECRET
    fcm_project: str = ""
    apns_topic: str = ""
    apns_sandbox_url: str = ""


def read(settings: Settings) -> MobileSettings:
    """The section as configured; `ConfigError` names a bad setting."""
    section = settings.sections.get(NAME, {})
    return MobileSettings(
        identity_secret=read_secret(section, "mobile.identity_secret"),
        session_secret=read_secret(section, "mobile.session_secret"),
        push_url=read_url(section, "mobile.push_url"),
        push_auth=read_secret(section, "mobile.push_auth"),
        fcm_project=read_str(section, "mobile.fcm_project", ""),
        apns_topic=read_str(section, "mobile.apns_topic", ""),
        apns_sandbox_url=read_url(section, "mobile.apns_sandbox_url"),
    )
