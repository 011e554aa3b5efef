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
`parameters`, in order; each is literal text in which `{text}` is the reply's text and
`{name}` the customer's profile name (their WhatsApp name when omni knows no other):

    [whatsapp.templates.default]
    name = "omni_reply"            # an approved template of your WhatsApp Business Account
    language = "en_US"             # the language it was approved in
    parameters = ["{name}", "{text}"]

Without `templates.default` (or with an empty name), a reply outside the window is not
sent: it fails at once with an `outside_window` reason on its delivery status.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omni.errors import ConfigError
from omni.settings import NO_SECRET, Secret, Settings, read_secret, read_str, read_url

GRAPH_URL = "https://graph.facebook.com/v22.0"
PARAMETERS_MAX = 10
_LANGUAGE = re.compile(r"^[a-z]{2,3}(_[A-Za-z0-9]{2,8})?$")
_TEMPLATE_NAME = re.compile(r"^[a-z0-9_]{1,512}$")


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
        """Webhooks can be verified: the routes answer."""
        return bool(self.app_secret and self.verify_token)

    @property
    def outbound(self) -> bool:
        """Replies can be sent (and media fetched)."""
        return bool(self.access_token and self.phone_number_id)


def from_settings(settings: Settings) -> WhatsAppConfig:
    return parse(settings.sections.get("whatsapp", {}))


def parse(section: Mapping[str, Any]) -> WhatsAppConfig:
    phone_number_id = read_str(section, "whatsapp.phone_number_id", "")
    if phone_number_id and not phone_number_id.isdigit():
        raise ConfigError(
            "whatsapp.phone_number_id: must be the number's id (digits, from WhatsApp > "
            f"API Setup), not {phone_number_id!r}"
        )
    return WhatsAppConfig(
        app_secret=read_secret(section, "whatsapp.app_secret"),
        verify_token=read_secret(section, "whatsapp.verify_token"),
        access_token=read_secret(section, "whatsapp.access_token"),
        phone_number_id=phone_number_id,
        graph_url=read_url(section, "whatsapp.graph_url", GRAPH_URL),
        default_template=_templates(section.get("templates", {})),
    )


def _templates(value: Any) -> Template | None:
    if not isinstance(value, dict):
        raise ConfigError("whatsapp.templates: must be a table, e.g. [whatsapp.templates.default]")
    for key in value:
        if key != "default":
            raise ConfigError(f"whatsapp.templates.{key}: unknown template use (known: default)")
    table = value.get("default")
    if table is None:
        return None
    where = "whatsapp.templates.default"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table with name, language and parameters")
    for key in table:
        if key not in ("name", "language", "parameters"):
            raise ConfigError(f"{where}.{key}: unknown setting (known: name, language, parameters)")
    name = read_str(table, f"{where}.name", "")
    if not name:
        return None
    if not _TEMPLATE_NAME.match(name):
        raise ConfigError(f"{where}.name: template names are lower-case letters, digits and _")
    language = read_str(table, f"{where}.language", "en_US")
    if not _LANGUAGE.match(language):
        raise ConfigError(f"{where}.language: a language code such as en_US, not {language!r}")
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
    return Template(name=name, language=language, parameters=tuple(parameters))
