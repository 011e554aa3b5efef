"""The `[whatsapp]` section: one WhatsApp Business phone number on the Cloud API.

    app_secret       the Meta app's secret: signs every webhook (X-Hub-Signature-256)
    verify_token     any string you choose; Meta sends it back in the subscription handshake
    access_token     a System User's permanent token with whatsapp_business_messaging:
                     sends replies and fetches the customers' media
    phone_number_id  the business number's id (not the number itself): replies are sent
                     from it
    graph_url        the Graph API base with its version
    templates        what a reply becomes outside the 24-hour customer service window

`templates.default` is the approved template a reply is sent as when the customer has
not written on WhatsApp for 24 hours (or never has). Its body's `{{1}}`, `{{2}}`, ... are
`parameters`, in order; each is literal text in which `{text}` is the reply's text,
`{name}` the customer's name and `{first_name}` its first word ("there" when omni knows
no name):

    [whatsapp.templates.default]
    name = "omni_reply"            # an approved template of your WhatsApp Business Account
    language = "en_US"             # the language it was approved in (default en_US)
    parameters = ["{first_name}", "{text}"]     # default: ["{text}"]

Shorter forms mean the same: `templates = "omni_reply"` or `templates.default =
"omni_reply"` (the defaults for the rest), a flat `[whatsapp.templates]` table with a
`name`, or a list of templates whose first is the default; `language` may also be
written as Graph does, `{code = "en_US"}`. Other names under `templates` and other keys
of a template are not used. Graph checks the name and language when it is sent: one it
does not know fails the reply with a `template_error` reason.

Without a template (or with an empty name), a reply outside the window is not sent: it
fails at once with an `outside_window` reason on its delivery status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omni.errors import ConfigError
from omni.settings import NO_SECRET, Secret, Settings, read_secret, read_str, read_url

GRAPH_URL = "https://graph.facebook.com/v22.0"
PARAMETERS_MAX = 10


@dataclass(frozen=True)
class Template:
    """An approved message template and how a reply fills its body."""

    name: str
    language: str = "en_US"
    parameters: tuple[str, ...] = ("{text}",)


@dataclass(frozen=True)
class WhatsAppConfig:
    app_secret: Secret = NO_SECRET
    verify_token: Secret = NO_SECRET
    access_token: Secret = NO_SECRET
    phone_number_id: str = ""
    graph_url: str = GRAPH_URL
    default_template: Template | None = None

    @property
    def inbound(self) -> bool:
        """Webhooks can be verified: the routes answer (the handshake also needs the
        verify token, and refuses every attempt without one)."""
        return bool(self.app_secret)

    @property
    def outbound(self) -> bool:
        """Replies can be sent (and media fetched)."""
        return bool(self.access_token and self.phone_number_id)


def from_settings(settings: Settings) -> WhatsAppConfig:
    return parse(settings.sections.get("whatsapp", {}))


def parse(section: Mapping[str, Any]) -> WhatsAppConfig:
    return WhatsAppConfig(
        app_secret=read_secret(section, "whatsapp.app_secret"),
        verify_token=read_secret(section, "whatsapp.verify_token"),
        access_token=read_secret(section, "whatsapp.access_token"),
        phone_number_id=read_str(section, "whatsapp.phone_number_id", ""),
        graph_url=read_url(section, "whatsapp.graph_url", GRAPH_URL),
        default_template=_templates(section.get("templates", {})),
    )


def _templates(value: Any) -> Template | None:
    """`templates.default`, from any of the shapes the section's docstring lists."""
    where = "whatsapp.templates"
    if isinstance(value, list):
        return _template(value[0], f"{where}[0]") if value else None
    if isinstance(value, dict) and "default" not in value and "name" in value:
        return _template(value, where)  # one template, written flat
    if isinstance(value, dict):
        found = value.get("default")
        return None if found is None else _template(found, f"{where}.default")
    return _template(value, where)


def _template(value: Any, where: str) -> Template | None:
    table = {"name": value} if isinstance(value, str) else value
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: a template's name, or a table with name, language, parameters")
    name = read_str(table, f"{where}.name", "").strip()
    if not name:
        return None
    language = table.get("language", "en_US")
    if isinstance(language, dict):  # as Graph writes it: {"code": "en_US"}
        language = language.get("code")
    if not isinstance(language, str) or not language.strip():
        raise ConfigError(f"{where}.language: a language code such as en_US")
    parameters = table.get("parameters", ["{text}"])
    if (
        not isinstance(parameters, list)
        or not all(isinstance(p, str) and p for p in parameters)
        or len(parameters) > PARAMETERS_MAX
    ):
        raise ConfigError(
            f"{where}.parameters: a list of at most {PARAMETERS_MAX} non-empty strings "
            '(e.g. ["{name}", "{text}"])'
        )
    return Template(name=name, language=language.strip(), parameters=tuple(parameters))
