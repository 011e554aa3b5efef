"""Replies as Send API request bodies (`POST {graph_url}/{phone_number_id}/messages`).
Pure: the sender posts what these return.

    attachments      one message each, by link: image, video, audio, sticker, file (as a
                     document, with its name as the filename), location
    text             a text message (WhatsApp takes up to 4096 characters, omni's limit)
    quick replies    interactive reply buttons when there are at most 3 and every title
                     fits in 20 characters; otherwise an interactive list (up to 10 rows,
                     titles cut to 24 characters with the whole title as the row's
                     description). The buttons ride on the text, whose last 1024
                     characters are the interactive body (any more goes first as text)
    template         outside the 24-hour window: `templates.default` (see config.py)
"""

from __future__ import annotations

import re
from typing import Any

from adapters.whatsapp.config import Template
from omni.model import Message, Payload
from omni.text import clean, shorten

PRODUCT = {"messaging_product": "whatsapp"}
BODY_MAX = 1024  # an interactive message's body
BUTTONS_MAX = 3
BUTTON_TITLE_MAX = 20
BUTTON_ID_MAX = 256
ROWS_MAX = 10
ROW_TITLE_MAX = 24
ROW_DESCRIPTION_MAX = 72
ROW_ID_MAX = 200
LIST_BUTTON = "Options"  # the label of the button that opens a list (at most 20)
PARAMETER_MAX = 1024
_MEDIA = {"image": "image", "video": "video", "audio": "audio", "sticker": "sticker",
          "file": "document"}  # fmt: skip
_SPACES = re.compile(r"[ \t\r\n]+")


def render(message: Message, recipient: str) -> list[dict[str, Any]]:
    """The request bodies for one reply, in sending order; ValueError when it cannot be
    expressed on WhatsApp."""
    base = {**PRODUCT, "recipient_type": "individual", "to": recipient}
    bodies: list[dict[str, Any]] = []
    for attachment in message.attachments:
        kind = _MEDIA.get(attachment.type)
        if attachment.type == "location":
            if attachment.latitude is None or attachment.longitude is None:
                raise ValueError("a location needs latitude and longitude")
            place: dict[str, Any] = {"latitude": attachment.latitude,
                                     "longitude": attachment.longitude}  # fmt: skip
            if attachment.name:
                place["name"] = attachment.name
            bodies.append({**base, "type": "location", "location": place})
            continue
        url = attachment.url or ""
        if kind is None or not url.startswith(("https://", "http://")):
            raise ValueError(f"cannot send a {attachment.type} attachment without an http(s) url")
        media: dict[str, Any] = {"link": url}
        if kind == "document" and attachment.name:
            media["filename"] = attachment.name
        bodies.append({**base, "type": kind, kind: media})
    text = clean(message.text) if message.text else ""
    if message.quick_replies:
        if not text:
            raise ValueError("quick replies need text")
        head, body = _split_body(text)
        if head:
            bodies.append(_text(base, head))
        bodies.append({**base, "type": "interactive",
                       "interactive": interactive(body, message.quick_replies)})  # fmt: skip
    elif text:
        bodies.append(_text(base, text))
    if not bodies:
        raise ValueError("nothing to send: no text and no attachments")
    return bodies


def interactive(body: str, options: list[Payload]) -> dict[str, Any]:
    """Reply buttons, or a list when they do not fit in buttons."""
    if len(options) > ROWS_MAX:
        raise ValueError(f"at most {ROWS_MAX} quick replies on WhatsApp")
    choices = [(clean(o.payload), clean(o.title or o.payload)) for o in options]
    if any(not payload for payload, _ in choices):
        raise ValueError("each quick reply needs a payload")
    if len({payload for payload, _ in choices}) < len(choices):
        raise ValueError("quick reply payloads must differ (WhatsApp answers with the payload)")
    fits = all(len(t) <= BUTTON_TITLE_MAX and len(p) <= BUTTON_ID_MAX for p, t in choices)
    if len(choices) <= BUTTONS_MAX and fits:
        buttons = [{"type": "reply", "reply": {"id": p, "title": t}} for p, t in choices]
        return {"type": "button", "body": {"text": body}, "action": {"buttons": buttons}}
    rows = []
    for payload, title in choices:
        if len(payload) > ROW_ID_MAX:
            raise ValueError(f"a quick reply payload in a list is at most {ROW_ID_MAX} characters")
        row = {"id": payload, "title": shorten(title, ROW_TITLE_MAX, "\u2026")}
        if row["title"] != title:
            row["description"] = shorten(title, ROW_DESCRIPTION_MAX, "\u2026")
        rows.append(row)
    action = {"button": LIST_BUTTON, "sections": [{"rows": rows}]}
    return {"type": "list", "body": {"text": body}, "action": action}


def render_template(
    template: Template, recipient: str, text: str, name: str | None
) -> dict[str, Any]:
    """The template message a reply becomes outside the window."""
    values = {"{text}": text, "{name}": name or "there",
              "{first_name}": (name or "there").split()[0]}  # fmt: skip
    parameters = []
    for pattern in template.parameters:
        value = pattern
        for key, replacement in values.items():
            value = value.replace(key, replacement)
        parameters.append({"type": "text", "text": _parameter(value)})
    content: dict[str, Any] = {"name": template.name, "language": {"code": template.language}}
    if parameters:
        content["components"] = [{"type": "body", "parameters": parameters}]
    return {**PRODUCT, "recipient_type": "individual", "to": recipient, "type": "template",
            "template": content}  # fmt: skip


def render_read(wamid: str, *, typing: bool = False) -> dict[str, Any]:
    """Mark the customer's message read (blue ticks), and show "typing…" until the
    reply or 25 seconds, whichever is first."""
    body: dict[str, Any] = {**PRODUCT, "status": "read", "message_id": wamid}
    if typing:
        body["typing_indicator"] = {"type": "text"}
    return body


def _text(base: dict[str, Any], text: str) -> dict[str, Any]:
    return {**base, "type": "text", "text": {"preview_url": False, "body": text}}


def _split_body(text: str) -> tuple[str, str]:
    """(text sent first, the interactive body): the body is the last BODY_MAX characters,
    starting after a line or word break when there is one."""
    if len(text) <= BODY_MAX:
        return "", text
    start = len(text) - BODY_MAX
    for mark in ("\n", " "):
        found = text.find(mark, start)
        if found != -1 and found < len(text) - 1:
            return text[:found].rstrip(), text[found + 1 :]
    return text[:start], text[start:]


def _parameter(value: str) -> str:
    """Template parameters may hold no new lines, tabs or runs of spaces (error 132018)."""
    text = _SPACES.sub(" ", clean(value)).strip() or "-"
    return shorten(text, PARAMETER_MAX, "\u2026")
