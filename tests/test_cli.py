"""The `omni` command as a newcomer meets it: every command's --help lists its options,
one line each; the port moves the public URL and `omni demo` with it; `make run PORT=`
reaches `omni serve`; and a mistake is answered with one line that says what to do."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from omni.channel import load, validate
from omni.cli import main
from omni.settings import Settings
from tests.processes import free_port

# Each command and the options its --help must list.
OPTIONS = {
    "serve": ("--config", "--host", "--port", "--processes", "--reuse-port"),
    "worker": ("--config",),
    "demo": ("--config", "--url", "--port"),
    "migrate": ("--config",),
}
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _logging_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # main() configures logging once for a process, caching loggers: not in the suite's.
    monkeypatch.setattr("omni.cli.configure", lambda *args, **kwargs: None)


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_every_command_help_lists_its_options_one_line_each(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    # What the command does, in words, above the options.
    assert len(out.split("options:")[0].split()) > 12, out
    for option in OPTIONS[command]:
        (line,) = [x for x in lines if re.match(rf"\s+{option}\b", x)]
        described = re.sub(rf"^\s+{option}( [A-Z]+)?\s+", "", line)
        assert len(described) > 10, line  # its help on the same line
        index = lines.index(line)
        assert not lines[index + 1].startswith(" " * 10), f"{option}'s help wraps: {out}"
    assert "--supervisor-fd" not in out  # the parent's own, not the user's


ANY = "0.0.0.0"  # noqa: S104 - the wildcard bind whose public URL is loopback


def test_the_public_url_follows_the_port_unless_set() -> None:
    assert Settings.from_env({"OMNI_CONFIG": ""}).server.public_url == "http://127.0.0.1:8080"
    moved = Settings.from_env({"OMNI_SERVER_PORT": "9000"})
    assert moved.server.public_url == "http://127.0.0.1:9000"
    wild = Settings.from_env({"OMNI_SERVER_HOST": ANY, "OMNI_SERVER_PORT": "9001"})
    assert wild.server.public_url == "http://127.0.0.1:9001"
    assert wild.server.at(ANY, 9002).public_url == "http://127.0.0.1:9002"
    assert wild.server.at("::", 9003).public_url == "http://[::1]:9003"
    fixed = Settings.from_env({"OMNI_SERVER_PUBLIC_URL": "https://omni.example.com/"})
    assert fixed.server.at(ANY, 9004).public_url == "https://omni.example.com"


def test_the_shipped_config_leaves_the_public_url_to_the_port() -> None:
    settings = Settings.from_env({"OMNI_CONFIG": str(ROOT / "config/omni.toml")})
    assert not settings.server.public_url_set


def test_the_example_cluster_config_loads_and_leaves_delivery_to_workers() -> None:
    settings = Settings.from_env({"OMNI_CONFIG": str(ROOT / "config/cluster.toml")})
    validate(settings, load())
    assert settings.redis.url == "redis://10.0.0.11:6379"
    assert settings.server.public_url == "https://omni.example.com"
    assert not settings.in_process_worker and settings.api_keys == ()


def test_demo_looks_where_the_settings_say_and_says_how_to_start_omni(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("OMNI_SERVER_PORT", str(port))
    assert main(["demo"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"omni demo: nothing answers at http://127.0.0.1:{port};"), err
    assert "make run PORT=" in err and "--url" in err
    other = free_port()
    assert main(["demo", "--port", str(other)]) == 1
    assert f"http://127.0.0.1:{other};" in capsys.readouterr().err
    third = free_port()
    assert main(["demo", "--url", f"http://localhost:{third}/"]) == 1
    assert f"nothing answers at http://localhost:{third}/;" in capsys.readouterr().err


def test_bad_arguments_get_one_line_that_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["serve", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "--config: no such file" in capsys.readouterr().err
    assert main(["serve", "--processes", "0"]) == 2
    assert "--processes: must be 1 or more" in capsys.readouterr().err
    assert main(["demo", "--url", "omni.local"]) == 2
    assert "--url must be http(s)://host[:port]" in capsys.readouterr().err


def test_make_run_passes_the_port_and_arguments_to_omni_serve() -> None:
    result = subprocess.run(
        ["make", "-n", "run", "PORT=9000", "ARGS=--processes 2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert ".venv/bin/omni serve --port 9000 --processes 2" in result.stdout
    demo = subprocess.run(
        ["make", "-n", "demo", "PORT=9000"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert ".venv/bin/omni demo --port 9000" in demo.stdout
