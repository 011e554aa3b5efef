"""Settings: one frozen object built from `config/omni.toml`, `OMNI_CONFIG` and `OMNI_*`.

Precedence, lowest first: the defaults in the dataclasses below, the file named by
`OMNI_CONFIG` (or `config/omni.toml` in the working directory when present), then
environment variables `OMNI_<SECTION>_<KEY>`, or `OMNI_<SECTION>_<KEY>_FILE` naming a
file that holds the value (a secret mounted by the orchestrator; one trailing newline
is dropped). A bad value raises `ConfigError` whose message names the setting; the CLI
prints that one line and exits.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from omni import phones
from omni.errors import ConfigError
from omni.eventloop import EVENT_LOOPS, EventLoop
from omni.outbox import OutboxConfig

Role = Literal["bot", "agent", "admin"]
ROLES: tuple[Role, ...] = ("bot", "agent", "admin")


class Secret:
    """A string whose repr never shows it, so settings can be logged or printed."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')" if self._value else "Secret('')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


# Secrets are immutable, so one empty one can be every unset secret's default.
NO_SECRET = Secret("")


@dataclass(frozen=True)
class ApiKey:
    key: Secret
    role: Role
    name: str


def local_url(host: str, port: int) -> str:
    """The URL omni answers at on this machine when it binds `host:port` (a wildcard
    bind answers on loopback too)."""
    shown = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    # Unless set explicitly (`public_url_set`), derived from host and port, so that
    # `--port 9000` moves the links, the Twilio signature URL and `omni demo` with it.
    public_url: str = "http://127.0.0.1:8080"
    shutdown_timeout: float = 10.0
    public_url_set: bool = False

    def at(self, host: str, port: int) -> ServerSettings:
        """These settings serving on `host:port` (the CLI's --host and --port)."""
        public = self.public_url if self.public_url_set else local_url(host, port)
        return replace(self, host=host, port=port, public_url=public)

    event_loop: EventLoop = "auto"  # omni.eventloop: uvloop when installed


@dataclass(frozen=True)
class RedisSettings:
    url: str = ""
    data_dir: Path = Path("./var")
    max_connections: int = 64
    pool_timeout: float = 5.0
    # The deadline for Redis's answer to one command or pipeline (and for connecting):
    # past it the request fails with a 503 and Retry-After instead of hanging on a
    # stalled server.
    request_timeout: float = 2.0
    # The embedded server's appendfsync: "always" loses no acknowledged write even when
    # the machine dies; "everysec" may lose the last second of them then (a killed
    # Redis process alone loses nothing either way: the writes are in the kernel).
    fsync: Literal["always", "everysec"] = "everysec"
    # `url` names one node of a Redis Cluster: omni discovers the rest (omni.redis_client).
    cluster: bool = False
    # Service-wide streams are split into this many hash-tagged shards in cluster mode,
    # so that no one node takes every write (omni.keys).
    shards: int = 8
    # An append (every ingest, echo and reply) is answered only once WAIT says this many
    # replicas hold it, within replica_ack_timeout_ms; fewer is a 503 (omni.replica_acks).
    replica_acks: int = 0
    replica_ack_timeout_ms: int = 1000

    @property
    def parts(self) -> int:
        """How many parts each service-wide key is split into (omni.keys): `shards` in a
        cluster, one on one server, where a part would buy nothing."""
        return self.shards if self.cluster else 1


@dataclass(frozen=True)
class LimitSettings:
    body_max: int = 1024 * 1024
    # Requests one process handles at once; more are answered 503 + Retry-After.
    max_in_flight: int = 1024
    window_s: int = 60  # the rate limits' window
    per_key: int = 120_000  # requests per window per API key; 0: no limit
    per_identity: int = 1200  # messages per window per channel sender; 0: no limit


@dataclass(frozen=True)
class ChannelSettings:
    enabled: tuple[str, ...] = ("web", "mobile", "instagram", "voice", "sms", "whatsapp", "email")


@dataclass(frozen=True)
class BotSettings:
    url: str
    secret: Secret
    timeout_ms: int = 3000


@dataclass(frozen=True)
class HandoffSettings:
    # An agent who holds a conversation and has not answered the customer this long
    # after the customer wrote (or after taking it over) loses it: it goes back to the
    # agents' queue and shows as waiting (conversation status "pending").
    reply_timeout_s: float = 300.0
    # How often each omni process looks for conversations whose agent reply is overdue.
    sweep_interval_s: float = 1.0


@dataclass(frozen=True)
class IdentitySettings:
    # The country a phone number written without its +country code is read in (ISO
    # 3166 alpha-2, e.g. "US"), unless the customer's locale names one (omni.phones).
    # Empty: only +international numbers are accepted.
    default_region: str = ""


@dataclass(frozen=True)
class LogSettings:
    format: Literal["auto", "json", "console"] = "auto"
    level: str = "info"


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    channels: ChannelSettings = field(default_factory=ChannelSettings)
    log: LogSettings = field(default_factory=LogSettings)
    api_keys: tuple[ApiKey, ...] = ()
    bots: dict[str, BotSettings] = field(default_factory=dict)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    # `omni serve` also runs a delivery worker in its own process (so `make run` is
    # complete); deployments with `omni worker` processes may turn it off.
    in_process_worker: bool = True
    handoff: HandoffSettings = field(default_factory=HandoffSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    # Every section as read (file, then environment), for the sections the core does not
    # own: a channel parses its own with the read_* helpers below, naming each setting.
    # Raw values include secrets, so they stay out of the repr.
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # The worker's blocking read waits block_ms on a client whose replies are due
        # within request_timeout: a longer wait would read as a stalled Redis.
        if self.outbox.block_ms >= self.redis.request_timeout * 1000:
            raise ConfigError(
                f"outbox.block_ms: must be less than redis.request_timeout "
                f"({self.redis.request_timeout:g} s), not {self.outbox.block_ms} ms"
            )
        # WAIT blocks up to replica_ack_timeout_ms on the same client: the same bound
        # (only when replica_acks asks for a WAIT at all).
        acks = self.redis
        if acks.replica_acks and acks.replica_ack_timeout_ms >= acks.request_timeout * 1000:
            raise ConfigError(
                f"redis.replica_ack_timeout_ms: must be less than redis.request_timeout "
                f"({self.redis.request_timeout:g} s), not {self.redis.replica_ack_timeout_ms} ms"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings the way `omni serve` does: defaults, file, environment."""
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        path = env.get("OMNI_CONFIG") or ""
        if path and not Path(path).is_file():
            raise ConfigError(f"OMNI_CONFIG: no such file: {path}")
        if not path and Path("config/omni.toml").is_file():
            path = "config/omni.toml"
        if path:
            raw = _read_toml(Path(path).read_text(), origin=path)
        _apply_env(raw, env)
        return cls.from_mapping(raw)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Settings:
        """Validate a TOML-shaped mapping; every error names its setting."""
        known = {
            "server", "redis", "limits", "channels", "auth", "log", "instagram", "twilio", "web",
            "mobile", "bots", "outbox", "handoff", "whatsapp", "sms", "email", "identity", "inbox",
            "surveys", "reports",
        }  # fmt: skip
        for section in raw:
            if section not in known:
                raise ConfigError(f"{section}: unknown section (known: {', '.join(sorted(known))})")
        server = read_section(raw, "server")
        redis = read_section(raw, "redis")
        limits = read_section(raw, "limits")
        channels = read_section(raw, "channels")
        log = read_section(raw, "log")
        auth = read_section(raw, "auth")
        fmt = read_str(log, "log.format", "auto")
        if fmt not in ("auto", "json", "console"):
            raise ConfigError(f"log.format: must be auto, json or console, not {fmt!r}")
        level = read_str(log, "log.level", "info").lower()
        if level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log.level: must be debug, info, warning or error, not {level!r}")
        enabled = channels.get("enabled", list(ChannelSettings.enabled))
        if not isinstance(enabled, list) or not all(
            isinstance(c, str) and c.isidentifier() and c.islower() for c in enabled
        ):
            raise ConfigError("channels.enabled: must be a list of lower-case channel names")
        return cls(
            server=_server(server),
            redis=RedisSettings(
                url=read_str(redis, "redis.url", ""),
                data_dir=Path(read_str(redis, "redis.data_dir", "./var")),
                max_connections=read_int(redis, "redis.max_connections", 64, low=1, high=10_000),
                pool_timeout=read_float(redis, "redis.pool_timeout", 5.0),
                request_timeout=_request_timeout(redis),
                fsync=_fsync(redis),
                cluster=_cluster(redis),
                shards=read_int(redis, "redis.shards", 8, low=1, high=1024),
                replica_acks=read_int(redis, "redis.replica_acks", 0, low=0, high=64),
                replica_ack_timeout_ms=read_int(
                    redis, "redis.replica_ack_timeout_ms", 1000, low=1, high=60_000
                ),
            ),
            limits=LimitSettings(
                body_max=read_int(limits, "limits.body_max", 1024 * 1024, low=1024, high=1 << 30),
                max_in_flight=read_int(limits, "limits.max_in_flight", 1024, low=1, high=1_000_000),
                window_s=read_int(limits, "limits.window_s", 60, low=1, high=86_400),
                per_key=read_int(limits, "limits.per_key", 120_000, low=0, high=1 << 40),
                per_identity=read_int(limits, "limits.per_identity", 1200, low=0, high=1 << 40),
            ),
            channels=ChannelSettings(enabled=tuple(enabled)),
            log=LogSettings(format=fmt, level=level),  # type: ignore[arg-type]
            api_keys=_api_keys(auth),
            bots=_bots(read_section(raw, "bots"), tuple(enabled)),
            outbox=_outbox(outbox := read_section(raw, "outbox"), _cluster(redis), redis),
            in_process_worker=read_bool(outbox, "outbox.in_process_worker", True),
            handoff=_handoff(read_section(raw, "handoff")),
            identity=_identity(read_section(raw, "identity")),
            sections=MappingProxyType({name: read_section(raw, name) for name in raw}),
        )


def _event_loop(server: Mapping[str, Any]) -> EventLoop:
    kind = read_str(server, "server.event_loop", "auto")
    if kind not in EVENT_LOOPS:
        raise ConfigError(f"server.event_loop: must be {', '.join(EVENT_LOOPS)}, not {kind!r}")
    return kind


def _read_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from None


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    """Apply OMNI_<SECTION>_<KEY>; values are parsed as TOML when they can be."""
    for name, value in env.items():
        if not name.startswith("OMNI_") or name in ("OMNI_CONFIG",):
            continue
        from_file = name.endswith("_FILE")
        if from_file:
            value = _read_secret_file(name, value)
            name = name.removesuffix("_FILE")
        if name == "OMNI_API_KEYS":
            raw.setdefault("auth", {})["env_keys"] = value
            continue
        rest = name[len("OMNI_") :].lower()
        section, _, key = rest.partition("_")
        if not key:
            continue
        # A file holds the value itself: a secret is a string, never parsed as TOML.
        raw.setdefault(section, {})[key] = value if from_file else _env_value(value)


def _read_secret_file(name: str, path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc}") from None
    return text.removesuffix("\n").removesuffix("\r")


def _env_value(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def read_section(raw: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: must be a table")
    return value


def read_str(section: Mapping[str, Any], name: str, default: str) -> str:
    value = section.get(name.rsplit(".", 1)[1], default)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ConfigError(f"{name}: must be a string")
    return value


def read_int(section: Mapping[str, Any], name: str, default: int, *, low: int, high: int) -> int:
    value = section.get(name.rsplit(".", 1)[1], default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: must be a whole number, not {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name}: must be between {low} and {high}, not {value}")
    return value


def read_float(section: Mapping[str, Any], name: str, default: float) -> float:
    value = section.get(name.rsplit(".", 1)[1], default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{name}: must be a non-negative number, not {value!r}")
    return float(value)


def _api_keys(auth: Mapping[str, Any]) -> tuple[ApiKey, ...]:
    keys: list[ApiKey] = []
    entries = auth.get("api_keys", [])
    if not isinstance(entries, list):
        raise ConfigError("auth.api_keys: must be a list of {key, role, name} tables")
    for index, entry in enumerate(entries):
        where = f"auth.api_keys[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a table with key, role and name")
        keys.append(_api_key(where, entry.get("key"), entry.get("role"), entry.get("name")))
    env_keys = auth.get("env_keys", "")
    for index, item in enumerate(p for p in str(env_keys).split(",") if p.strip()):
        role, sep, key = item.strip().partition(":")
        if not sep:
            raise ConfigError(f"OMNI_API_KEYS: entry {index + 1} must be role:key")
        keys.append(_api_key(f"OMNI_API_KEYS entry {index + 1}", key, role, f"env {role}"))
    seen: set[str] = set()
    for api_key in keys:
        if api_key.key.reveal() in seen:
            raise ConfigError(f"auth.api_keys: the key named {api_key.name!r} is listed twice")
        seen.add(api_key.key.reveal())
    return tuple(keys)


def _api_key(where: str, key: object, role: object, name: object) -> ApiKey:
    if not isinstance(key, str) or len(key) < 8:
        raise ConfigError(f"{where}.key: must be a string of at least 8 characters")
    if role not in ROLES:
        raise ConfigError(f"{where}.role: must be one of bot, agent, admin, not {role!r}")
    if name is None:
        name = role
    if not isinstance(name, str):
        raise ConfigError(f"{where}.name: must be a string")
    return ApiKey(key=Secret(key), role=role, name=name)


def read_secret(section: Mapping[str, Any], name: str) -> Secret:
    return Secret(read_str(section, name, ""))


def read_str_list(section: Mapping[str, Any], name: str) -> list[str]:
    value = section.get(name.rsplit(".", 1)[1], [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name}: must be a list of strings")
    return value


def read_url(section: Mapping[str, Any], name: str, default: str = "") -> str:
    value = read_str(section, name, default).rstrip("/")
    if value and not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name}: must be an http:// or https:// URL, not {value!r}")
    return value


def _bots(section: Mapping[str, Any], channels: tuple[str, ...]) -> dict[str, BotSettings]:
    bots = {}
    for channel, table in section.items():
        where = f"bots.{channel}"
        if channel not in channels:
            raise ConfigError(f"{where}: {channel!r} is not in channels.enabled")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table with url, secret and timeout_ms")
        url = read_url(table, f"{where}.url")
        if not url:
            raise ConfigError(f"{where}.url: is required")
        secret = read_secret(table, f"{where}.secret")
        if len(secret.reveal()) < 16:
            raise ConfigError(f"{where}.secret: must be at least 16 characters")
        bots[channel] = BotSettings(
            url=url,
            secret=secret,
            timeout_ms=read_int(table, f"{where}.timeout_ms", 3000, low=100, high=60_000),
        )
    return bots


def read_bool(section: Mapping[str, Any], name: str, default: bool) -> bool:
    value = section.get(name.rsplit(".", 1)[1], default)
    if not isinstance(value, bool):
        raise ConfigError(f"{name}: must be true or false")
    return value


def _outbox(section: Mapping[str, Any], cluster: bool, redis: Mapping[str, Any]) -> OutboxConfig:
    defaults = OutboxConfig()
    # One queue on one server; in a cluster as many as the service-wide streams' parts,
    # so that no node takes every delivery.
    queues = read_int(redis, "redis.shards", 8, low=1, high=1024) if cluster else 1
    return OutboxConfig(
        queue=read_str(section, "outbox.queue", defaults.queue),
        queues=read_int(section, "outbox.queues", queues, low=1, high=1024),
        group=read_str(section, "outbox.group", defaults.group),
        **{
            name: read_int(
                section, f"outbox.{name}", getattr(defaults, name), low=1, high=86_400_000
            )
            for name in (
                "max_attempts",
                "base_delay_ms",
                "max_delay_ms",
                "visibility_timeout_ms",
                "handler_timeout_ms",
                "batch",
                "block_ms",
            )
        },
    )


def _server(section: Mapping[str, Any]) -> ServerSettings:
    host = read_str(section, "server.host", "127.0.0.1")
    port = read_int(section, "server.port", 8080, low=0, high=65535)
    public = read_url(section, "server.public_url")
    return ServerSettings(
        host=host,
        port=port,
        public_url=public or local_url(host, port),
        shutdown_timeout=read_float(section, "server.shutdown_timeout", 10.0),
        public_url_set=bool(public),
        event_loop=_event_loop(section),
    )


def _request_timeout(section: Mapping[str, Any]) -> float:
    value = read_float(section, "redis.request_timeout", RedisSettings.request_timeout)
    if not 0.05 <= value <= 300:
        raise ConfigError(
            f"redis.request_timeout: must be between 0.05 and 300 seconds, not {value}"
        )
    return value


def _cluster(section: Mapping[str, Any]) -> bool:
    """`redis.cluster`: only with a `redis.url` naming a node over TCP (the embedded
    server is one server, and a cluster's nodes tell clients their TCP addresses)."""
    cluster = read_bool(section, "redis.cluster", False)
    url = read_str(section, "redis.url", "")
    if cluster and not url.startswith(("redis://", "rediss://")):
        raise ConfigError(
            "redis.cluster: needs redis.url to name one node of the cluster, redis://host:port "
            f"(not {url!r}); `make cluster` starts a local one on redis://127.0.0.1:7000"
        )
    return cluster


def _fsync(section: Mapping[str, Any]) -> Literal["always", "everysec"]:
    value = read_str(section, "redis.fsync", RedisSettings.fsync)
    if value not in ("always", "everysec"):
        raise ConfigError(f"redis.fsync: must be always or everysec, not {value!r}")
    return value  # type: ignore[return-value]


def _identity(section: Mapping[str, Any]) -> IdentitySettings:
    region = read_str(section, "identity.default_region", "").strip().upper()
    if region and region not in phones.regions():
        raise ConfigError(
            f"identity.default_region: {region!r} is not a region with phone numbers "
            "(an ISO 3166 alpha-2 code such as US, GB, FR), or empty"
        )
    return IdentitySettings(default_region=region)


def _handoff(section: Mapping[str, Any]) -> HandoffSettings:
    timeout = read_float(section, "handoff.reply_timeout_s", HandoffSettings.reply_timeout_s)
    sweep = read_float(section, "handoff.sweep_interval_s", HandoffSettings.sweep_interval_s)
    if timeout <= 0:
        raise ConfigError("handoff.reply_timeout_s: must be more than 0 seconds")
    if not 0.01 <= sweep <= 3600:
        raise ConfigError("handoff.sweep_interval_s: must be between 0.01 and 3600 seconds")
    return HandoffSettings(reply_timeout_s=timeout, sweep_interval_s=sweep)


def inbox_shards(settings: Settings) -> int:
    """`[inbox] shards`: how many sorted sets per status the team inbox's index spreads
    over (omni.store.inbox), so that in a Redis Cluster no one node takes every write."""
    section = settings.sections.get("inbox", {})
    return read_int(section, "inbox.shards", 16, low=1, high=1024)
