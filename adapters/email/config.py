"""The `[email] section`: the address omni mails from, the SMTP server it mails through,
and the inbound providers' credentials (Mailgun's signing key, Postmark's basic auth)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from omni.errors import ConfigError
from omni.settings import NO_SECRET, Secret, Settings, read_int, read_secret, read_str

NAME = "email"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Smtp:
    """Where replies go out: smtps:// is TLS from the first byte (port 465); smtp://
    upgrades with STARTTLS when the server offers it (port 587, or 25)."""

    host: str
    port: int
    tls: bool
    username: str = ""
    password: Secret = NO_SECRET


@dataclass(frozen=True)
class EmailSettings:
    from_address: str = ""
    from_name: str = ""
    smtp: Smtp | None = None
    mailgun_signing_key: Secret = NO_SECRET
    postmark_user: Secret = NO_SECRET
    postmark_password: Secret = NO_SECRET
    # Mailgun signs a timestamp, not the body: a post older (or newer) than this is
    # refused, and its token is remembered this long so a replay inside it is refused.
    signature_max_age_s: int = 300
    # The inbound route's body limit: Mailgun takes mails up to 25 MB, Postmark up to
    # 35 MB, base64 in JSON (a third more). Larger posts get 413; Postmark retries.
    body_max: int = 32 * MIB
    # The subject of a mail omni starts (the customer has not mailed yet).
    subject: str = "Your conversation with us"
    smtp_timeout_s: int = 30

    @property
    def inbound(self) -> bool:
        return bool(self.mailgun_signing_key or (self.postmark_user and self.postmark_password))


def smtp(url: str) -> Smtp | None:
    """`smtp://user:password@host:587` or `smtps://user:password@host:465`."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigError("email.smtp_url: must be smtp://[user:password@]host[:port] or smtps://…")
    try:
        port = parts.port or (465 if parts.scheme == "smtps" else 587)
    except ValueError:
        raise ConfigError("email.smtp_url: the port is not a number") from None
    return Smtp(
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "smtps",
        username=unquote(parts.username or ""),
        password=Secret(unquote(parts.password or "")),
    )


def read(settings: Settings) -> EmailSettings:
    """The section as configured; `ConfigError` names a bad setting."""
    section = settings.sections.get(NAME, {})
    from_address = read_str(section, "email.from_address", "").strip()
    if from_address and ("@" not in from_address or "<" in from_address):
        raise ConfigError("email.from_address: must be a bare address (support@example.com)")
    return EmailSettings(
        from_address=from_address,
        from_name=read_str(section, "email.from_name", ""),
        smtp=smtp(read_secret(section, "email.smtp_url").reveal()),
        mailgun_signing_key=read_secret(section, "email.mailgun_signing_key"),
        postmark_user=read_secret(section, "email.postmark_user"),
        postmark_password=read_secret(section, "email.postmark_password"),
        signature_max_age_s=read_int(
            section, "email.signature_max_age_s", 300, low=10, high=10 * 366 * 86_400
        ),
        body_max=read_int(section, "email.body_max", 32 * MIB, low=64 * 1024, high=256 * MIB),
        subject=read_str(section, "email.subject", EmailSettings.subject),
        smtp_timeout_s=read_int(section, "email.smtp_timeout_s", 30, low=1, high=600),
    )
