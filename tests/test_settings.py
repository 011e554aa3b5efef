"""Configuration: defaults, the TOML file, OMNI_* overrides, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from omni.errors import ConfigError
from omni.eventloop import loop_name, new_event_loop
from omni.settings import Secret, Settings


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "omni.toml"
    config.write_text(
        '[server]\nport = 9000\npublic_url = "https://omni.example/"\n'
        '[auth]\napi_keys = [{key = "file-key-12345", role = "agent", name = "desk"}]\n'
    )
    settings = Settings.from_env(
        {
            "OMNI_CONFIG": str(config),
            "OMNI_SERVER_PORT": "9100",
            "OMNI_REDIS_URL": "redis://127.0.0.1:6390/0",
            "OMNI_API_KEYS": "bot:env-bot-key-123,admin:env-admin-key-1",
        }
    )
    assert settings.server.port == 9100
    assert settings.server.public_url == "https://omni.example"
    assert settings.redis.url == "redis://127.0.0.1:6390/0"
    assert [(k.role, k.name) for k in settings.api_keys] == [
        ("agent", "desk"),
        ("bot", "env bot"),
        ("admin", "env admin"),
    ]


def test_secrets_never_show_in_a_repr() -> None:
    settings = Settings.from_mapping(
        {"auth": {"api_keys": [{"key": "super-secret-key", "role": "bot"}]}}
    )
    assert "super-secret-key" not in repr(settings)
    assert repr(Secret("x")) == "Secret('****')"


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"server": {"port": 70000}}, "server.port"),
        ({"server": {"port": "x"}}, "server.port"),
        ({"limits": {"body_max": 10}}, "limits.body_max"),
        ({"auth": {"api_keys": [{"key": "short", "role": "bot"}]}}, "auth.api_keys[0].key"),
        ({"auth": {"api_keys": [{"key": "long-enough-key", "role": "god"}]}}, "role"),
        ({"channels": {"enabled": ["Web Chat"]}}, "channels.enabled"),
        ({"serverr": {}}, "serverr"),
        ({"log": {"format": "xml"}}, "log.format"),
        ({"server": {"event_loop": "trio"}}, "server.event_loop"),
        # A cluster is found from one node's TCP address: not the embedded server's.
        ({"redis": {"cluster": True}}, "redis.cluster"),
        ({"redis": {"cluster": True, "url": "unix:///tmp/x.sock"}}, "redis.cluster"),
        ({"redis": {"shards": 0}}, "redis.shards"),
    ],
)
def test_bad_settings_name_themselves(raw: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        Settings.from_mapping(raw)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OMNI_CONFIG"):
        Settings.from_env({"OMNI_CONFIG": str(tmp_path / "nope.toml")})


def test_duplicate_keys_are_refused() -> None:
    keys = [{"key": "same-key-123", "role": "bot"}, {"key": "same-key-123", "role": "admin"}]
    with pytest.raises(ConfigError, match="twice"):
        Settings.from_mapping({"auth": {"api_keys": keys}})


def test_the_event_loop_is_uvloop_when_installed_and_asyncio_on_request() -> None:
    auto = new_event_loop(Settings.from_mapping({}).server.event_loop)
    chosen = new_event_loop(
        Settings.from_mapping({"server": {"event_loop": "asyncio"}}).server.event_loop
    )
    try:
        # uvloop is a dependency on this platform: "auto" picks it.
        assert (loop_name(auto), loop_name(chosen)) == ("uvloop", "asyncio")
    finally:
        auto.close()
        chosen.close()
