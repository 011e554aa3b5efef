"""Serving safely by default: the development keys and secrets config/omni.toml ships
for `make run` are fine on 127.0.0.1 and nowhere else. `omni serve` refuses any other
address while one of them is in effect (tests/test_settings.py keeps this list and the
file in step)."""

from __future__ import annotations

import ipaddress

from omni.settings import Settings

DEVELOPMENT_VALUES = frozenset(
    {
        "dev-bot-key",
        "dev-agent-key",
        "dev-admin-key",
        "dev-only-web-session-secret-change-me-0001",
        "dev-only-web-identity-secret",
        "dev-only-mobile-session-secret-change-me-01",
        "dev-only-mobile-identity-secret",
        "dev-only-instagram-app-secret",
        "dev-only-verify-token",
        "dev-only-twilio-auth-token",
        "dev-only-whatsapp-app-secret",
        "dev-only-whatsapp-verify-token",
        "dev-only-mailgun-signing-key",
        "dev-only-postmark-user",
        "dev-only-postmark-password",
    }
)


def development_settings(settings: Settings) -> list[str]:
    """The settings that hold one of config/omni.toml's development values."""
    found = [
        f"auth.api_keys ({key.role} key {key.name!r})"
        for key in settings.api_keys
        if key.key.reveal() in DEVELOPMENT_VALUES
    ]
    for section, values in settings.sections.items():
        found += [
            f"{section}.{name}"
            for name, value in values.items()
            if isinstance(value, str) and value in DEVELOPMENT_VALUES
        ]
    return found


def loopback(host: str) -> bool:
    """Only this machine can reach `host` (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, or "" (every address)


def refusal(settings: Settings, host: str) -> str | None:
    """Why serving on `host` is refused, naming the setting; None when it is not."""
    if loopback(host):
        return None
    found = development_settings(settings)
    if not found:
        return None
    return (
        f"{found[0]}: the development value from config/omni.toml is in effect, and "
        f"{host or 'every address'} is reachable from other machines; set your own "
        "(OMNI_<SECTION>_<KEY>, or OMNI_<SECTION>_<KEY>_FILE naming a file) or serve on "
        "127.0.0.1" + (f" (also: {', '.join(found[1:])})" if len(found) > 1 else "")
    )
