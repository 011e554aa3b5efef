"""The `[instagram]` section: the app's secrets and the Graph API account to send from."""

from __future__ import annotations

from dataclasses import dataclass

from omni.settings import NO_SECRET, Secret, Settings, read_secret, read_str, read_url

NAME = "instagram"


@dataclass(frozen=True)
class InstagramSettings:
    app_secret: Secret = NO_SECRET
    verify_token: Secret = NO_SECRET
    page_token: Secret = NO_SECRET
    account_id: str = ""
    graph_url: str = "https://graph.instagram.com/v22.0"


def read(settings: Settings) -> InstagramSettings:
    """The section as configured; `ConfigError` names a bad setting."""
    section = settings.sections.get(NAME, {})
    return InstagramSettings(
        app_secret=read_secret(section, "instagram.app_secret"),
        verify_token=read_secret(section, "instagram.verify_token"),
        page_token=read_secret(section, "instagram.page_token"),
        account_id=read_str(section, "instagram.account_id", ""),
        graph_url=read_url(section, "instagram.graph_url", InstagramSettings.graph_url),
    )
