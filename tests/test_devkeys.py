"""Safe by default: `omni serve` refuses an address other machines can reach while a
development key or secret of config/omni.toml is in effect, naming the setting; secrets
can come from files (`OMNI_<SECTION>_<KEY>_FILE`)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from omni.devkeys import DEVELOPMENT_VALUES, loopback, refusal
from omni.errors import ConfigError
from omni.settings import Settings

ROOT = Path(__file__).parent.parent
CONFIG = ROOT / "config" / "omni.toml"
EVERY = "0.0.0.0"  # noqa: S104 (the address refused, never bound)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_the_list_is_the_files_development_values() -> None:
    shipped = {s for s in _strings(tomllib.loads(CONFIG.read_text())) if s.startswith("dev-")}
    assert shipped == DEVELOPMENT_VALUES


def _overrides(tmp_path: Path) -> dict[str, str]:
    """Every development value replaced, some from files as an orchestrator mounts them."""
    secret = tmp_path / "web-session-secret"
    secret.write_text("a-real-web-session-secret-of-40-characters\n")
    return {
        "OMNI_CONFIG": str(CONFIG),
        "OMNI_AUTH_API_KEYS": "[]",
        "OMNI_API_KEYS": "admin:prod-admin-key-0001",
        "OMNI_WEB_SESSION_SECRET_FILE": str(secret),
        "OMNI_WEB_IDENTITY_SECRET": "prod-web-identity",
        "OMNI_MOBILE_SESSION_SECRET": "prod-mobile-session-secret-of-40-characters",
        "OMNI_MOBILE_IDENTITY_SECRET": "prod-mobile-identity",
        "OMNI_INSTAGRAM_APP_SECRET": "prod-instagram-secret",
        "OMNI_INSTAGRAM_VERIFY_TOKEN": "prod-verify",
        "OMNI_TWILIO_AUTH_TOKEN": "prod-twilio",
        "OMNI_WHATSAPP_APP_SECRET": "prod-whatsapp-secret",
        "OMNI_WHATSAPP_VERIFY_TOKEN": "prod-whatsapp-verify",
        "OMNI_EMAIL_MAILGUN_SIGNING_KEY": "prod-mailgun-key",
        "OMNI_EMAIL_POSTMARK_USER": "prod-postmark",
        "OMNI_EMAIL_POSTMARK_PASSWORD": "prod-postmark-password",
    }


def test_development_values_are_refused_beyond_loopback(tmp_path: Path) -> None:
    dev = Settings.from_env({"OMNI_CONFIG": str(CONFIG)})
    assert refusal(dev, "127.0.0.1") is None
    assert refusal(dev, "::1") is None
    for host in (EVERY, "", "10.1.2.3", "omni.internal"):
        message = refusal(dev, host)
        assert message is not None and message.startswith("auth.api_keys")
    own = Settings.from_env(_overrides(tmp_path))
    assert own.sections["web"]["session_secret"] == "a-real-web-session-secret-of-40-characters"
    assert refusal(own, EVERY) is None
    one_left = Settings.from_env({**_overrides(tmp_path), "OMNI_TWILIO_AUTH_TOKEN": ""})
    assert refusal(one_left, EVERY) is None  # empty: the channel is simply off
    twilio_dev = {**_overrides(tmp_path)}
    del twilio_dev["OMNI_TWILIO_AUTH_TOKEN"]
    message = refusal(Settings.from_env(twilio_dev), EVERY)
    assert message is not None and message.startswith("twilio.auth_token")


def test_loopback() -> None:
    assert loopback("127.0.0.1") and loopback("127.8.9.1") and loopback("localhost")
    assert not loopback(EVERY) and not loopback("") and not loopback("192.168.1.1")


def test_an_unreadable_secret_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OMNI_WEB_SESSION_SECRET_FILE"):
        Settings.from_env({"OMNI_WEB_SESSION_SECRET_FILE": str(tmp_path / "missing")})


def test_serve_refuses_every_address_with_the_development_keys() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}
    done = subprocess.run(
        [sys.executable, "-m", "omni.cli", "serve", "--host", EVERY, "--port", "9"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("omni: configuration error: auth.api_keys")
    assert "127.0.0.1" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
