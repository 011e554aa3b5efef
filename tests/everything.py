"""The app with every channel configured (web, mobile, Instagram, voice, WhatsApp, SMS,
e-mail), for the suites that walk every route (limits,
schema, authorization, fuzzing), and the log capture they search for tracebacks."""

from __future__ import annotations

import io
import json
from typing import Any

from omni.logs import configure
from omni.settings import LogSettings, Settings
from tests.adapters.test_instagram import ACCOUNT, PAGE_TOKEN, SECRET, VERIFY_TOKEN
from tests.conftest import make_settings
from tests.test_channel_email import EMAIL
from tests.test_channel_mobile import MOBILE
from tests.test_channel_sms import ACCOUNT as SMS_ACCOUNT
from tests.test_channel_sms import SERVICE as SMS_SERVICE
from tests.test_channel_voice import PUBLIC, TOKEN
from tests.test_channel_web import WEB
from tests.test_channel_whatsapp import WHATSAPP

INSTAGRAM = {
    "app_secret": SECRET,
    "verify_token": VERIFY_TOKEN,
    "page_token": PAGE_TOKEN,
    "account_id": ACCOUNT,
    "graph_url": "http://127.0.0.1:9/v22.0",  # nothing listens: nothing is sent
}


def full_settings(redis_url: str, **sections: Any) -> Settings:
    return make_settings(
        redis_url,
        server={"public_url": PUBLIC},
        web=WEB,
        mobile={**MOBILE, "push_url": ""},
        instagram=INSTAGRAM,
        twilio={"auth_token": TOKEN},
        whatsapp=sections.pop("whatsapp", WHATSAPP),
        sms={
            "account_sid": SMS_ACCOUNT,
            "messaging_service_sid": SMS_SERVICE,
            "api_url": "http://127.0.0.1:9",
        },  # nothing listens: nothing is sent
        email=EMAIL,
        **{"outbox": {"in_process_worker": False}, **sections},  # nothing delivers meanwhile
    )


class Logs:
    """Every line structlog writes from now on, as JSON."""

    def __init__(self) -> None:
        self.out = io.StringIO()
        configure(LogSettings(format="json", level="debug"), stream=self.out)

    @property
    def text(self) -> str:
        return self.out.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def tracebacks(self) -> list[str]:
        """Lines that carry a traceback or report an error omni did not expect."""
        return [
            line
            for line in self.text.splitlines()
            if "Traceback" in line
            or '"exception"' in line
            or '"level":"error"' in line
            or '"level":"critical"' in line
        ]
