"""WhatsApp (the Cloud API): one WhatsApp Business phone number's customers in omni.

The customer is `whatsapp` + their `wa_id` (their number in digits, no "+"), so
`GET /v1/context?channel=whatsapp&external_id=<wa_id>` finds them; their WhatsApp profile
name becomes their name when omni knows none. Their number joins the customer of another
channel only by omni's verified-phone rule (`omni.identity`): a customer who verified
that number, or an agent's link. A number the customer typed, or a contact card they
shared, joins nobody.

What each thing WhatsApp sends becomes (`protocol.parse`):

    text                         a message with its text
    image, audio, video,         a message with one attachment (image, audio, video,
    document, sticker            file, sticker) whose url is omni's media route for the
                                 media id; the caption is the text; Graph is asked for
                                 the media's type and size while the webhook is answered
                                 (a failed lookup is noted as metadata media_error, and
                                 the message is stored all the same). omni keeps no copy
                                 of the bytes: the route fetches them afresh from Graph
                                 when asked, as long as Meta keeps them
    location                     a location attachment (latitude, longitude, the place's
                                 name, metadata location_address)
    contacts                     an attachment of type other per card (its name);
                                 the first card's number as metadata, never as a fact
    interactive button_reply,    quick_reply {payload: the id we set, title}, text = title
    list_reply
    interactive nfm_reply        quick_reply with the Flow's response JSON as payload
    button (a template's quick   quick_reply {payload, title: text}, metadata
    reply button)                template_button
    order                        product attachments (catalog items)
    reaction                     Marked reaction (an emoji) or unreaction (none) on the
                                 message it points at
    context.id                   reply_to: the wamid of the message answered
    statuses sent, delivered,    the delivery status of our reply with that wamid, never
    read, failed                 moving backwards (read also marks it read); a failure's
                                 first error becomes its reason (`errors.py`)
    unsupported, system,         Skipped with the reason logged; nothing is stored
    unknown kinds

The same wamid delivered again is stored once. Replies: text, media by link, quick
replies as reply buttons or a list, and outside the 24-hour window the configured
template (`config.py`), or a visible `outside_window` failure.

A survey (omni.surveys) is asked with its choices as quick replies, so as reply buttons
or a list (CSAT's 1-5 and CES's 1-7 are a list); the customer's tap comes back as a
button_reply or list_reply carrying the survey's id. A list holds at most 10 rows, so
NPS (0-10, eleven choices) is asked as a numbered reply, answered by typing the number.

    protocol.py   pure: the signature, the handshake, what each notification becomes
    render.py     pure: replies as Send API bodies, the template, the read receipt
    graph.py      pure: the Graph requests (send, media lookup) and reading the answers
    errors.py     pure: WhatsApp's error codes as reasons, and which are worth a retry
    sender.py     sends them (the window, the template fallback); fetches media
    adapter.py    the configured channel the routes use; media looked up on arrival
    routes.py     the webhook and the media route
"""

from __future__ import annotations

import aiohttp
import structlog

from adapters.whatsapp import config as whatsapp_config
from adapters.whatsapp.adapter import WhatsAppAdapter
from adapters.whatsapp.render import ROWS_MAX
from adapters.whatsapp.routes import ROUTES
from adapters.whatsapp.sender import GraphClient, WindowedSender, not_configured
from omni.channel import Channel, Sender
from omni.settings import Settings
from omni.store import Store

NAME = "whatsapp"
log = structlog.get_logger("adapters.whatsapp")


def setup(
    settings: Settings, session: aiohttp.ClientSession, store: Store
) -> tuple[WhatsAppAdapter | None, Sender | None]:
    """Inbound needs app_secret (and the handshake verify_token); replies and media,
    access_token and phone_number_id."""
    config = whatsapp_config.from_settings(settings)
    if not config.inbound:
        return None, None
    client = GraphClient(config, session) if config.outbound else None
    adapter = WhatsAppAdapter(config, client, settings.server.public_url)
    if client is None:
        log.warning("whatsapp replies cannot be sent: access_token or phone_number_id is not set")
        return adapter, not_configured
    return adapter, WindowedSender(client, config, store)


# The Cloud API does not send our own messages back: echoes=False.
CHANNEL = Channel(
    NAME,
    ROUTES,
    setup,
    echoes=False,
    config=whatsapp_config.from_settings,
    survey="quick_replies",
    survey_choices=ROWS_MAX,
)

__all__ = ["CHANNEL", "NAME", "setup"]
