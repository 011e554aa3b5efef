"""The `[web]` section: the widget's session and login secrets and the pages (origins)
allowed to call the channel from a browser."""

from __future__ import annotations

from dataclasses import dataclass

from omni.settings import NO_SECRET, Secret, Settings, read_secret, read_str_list

NAME = "web"


@dataclass(frozen=True)
class WebSettings:
    identity_secret: Secret = NO_SECRET
    session_secret: Secret = NO_SECRET
    allowed_origins: tuple[str, ...] = ()


def read(settings: Settings) -> WebSettings:
    """The section as configured; `ConfigError` names a bad setting."""
    section = settings.sections.get(NAME, {})
    return WebSettings(
        identity_secret=read_secret(section, "web.identity_secret"),
        session_secret=read_secret(section, "web.session_secret"),
        allowed_origins=tuple(read_str_list(section, "web.allowed_origins")),
    )
