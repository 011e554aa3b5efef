"""TwiML, the documents every voice webhook is answered with: pure renderers (Gather, Say,
Hangup, Dial, Redirect); text and attributes are escaped by ElementTree, and characters
XML 1.0 cannot carry are dropped from spoken text rather than breaking the document."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

# -- TwiML: pure renderers; text and attributes are escaped by ElementTree ------------------

# Characters XML 1.0 cannot carry; dropped from spoken text rather than breaking the document.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MODES = frozenset({"speech", "dtmf", "speech dtmf", "dtmf speech"})
E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_CLIENT = re.compile(r"client:[A-Za-z0-9_]+")


def dial_target(target: str) -> bool:
    return bool(
        E164.fullmatch(target) or _CLIENT.fullmatch(target) or target.startswith(("sip:", "sips:"))
    )


def gather(
    prompts: str | Sequence[str],
    *,
    action: str,
    modes: str = "speech dtmf",
    language: str | None = "en-US",
    voice: str | None = None,
    speech_timeout: str | None = "auto",
    speech_model: str | None = None,
    timeout: int | None = None,
    hints: Sequence[str] = (),
    action_on_empty_result: bool = True,
    fallthrough: str | None = None,
) -> str:
    """Say the prompts inside a `<Gather>` that posts the answer to `action`; `fallthrough`
    is a `<Redirect>` after it, reached only if Twilio falls through the Gather."""
    if modes not in _MODES:
        raise ValueError(f"Gather input must be speech, dtmf or both, not {modes!r}")
    speech = "speech" in modes
    root = ET.Element("Response")
    listen = _add(
        root,
        "Gather",
        input=modes,
        action=action,
        method="POST",
        speechTimeout=speech_timeout if speech else None,
        language=language if speech else None,
        actionOnEmptyResult="true" if action_on_empty_result else None,
        speechModel=speech_model if speech else None,
        timeout=None if timeout is None else str(timeout),
        hints=", ".join(hints) if hints and speech else None,
    )
    for prompt in [prompts] if isinstance(prompts, str) else prompts:
        _add(listen, "Say", prompt, voice=voice, language=language)
    if fallthrough is not None:
        _add(root, "Redirect", fallthrough, method="POST")
    return _document(root)


def hangup(
    goodbye: str | None = None, *, voice: str | None = None, language: str | None = None
) -> str:
    """Optionally say goodbye, then `<Hangup/>`."""
    root = ET.Element("Response")
    if goodbye:
        _add(root, "Say", goodbye, voice=voice, language=language)
    _add(root, "Hangup")
    return _document(root)


def dial(
    targets: Sequence[str],
    *,
    action: str,
    say_first: str | None = None,
    timeout: int = 20,
    answer_on_bridge: bool = True,
    caller_id: str | None = None,
    voice: str | None = None,
    language: str | None = None,
) -> str:
    """Transfer the live call: `<Dial>` one or more targets (E.164 numbers, up to 10;
    `client:<identity>`; `sip:` URIs), then Twilio posts DialCallStatus to `action`."""
    if not targets or sum(1 for t in targets if E164.fullmatch(t)) > 10:
        raise ValueError("Dial needs 1 to 10 numbers or other targets")
    root = ET.Element("Response")
    if say_first:
        _add(root, "Say", say_first, voice=voice, language=language)
    connect = _add(
        root,
        "Dial",
        action=action,
        method="POST",
        timeout=str(timeout),
        answerOnBridge="true" if answer_on_bridge else None,
        callerId=caller_id,
    )
    for target in targets:
        if E164.fullmatch(target):
            _add(connect, "Number", target)
        elif _CLIENT.fullmatch(target):
            _add(connect, "Client", target.removeprefix("client:"))
        elif target.startswith(("sip:", "sips:")):
            _add(connect, "Sip", target)
        else:
            raise ValueError("a Dial target is an E.164 number, client:<identity> or a sip: URI")
    return _document(root)


def redirect(url: str) -> str:
    """Hand the call to the TwiML at `url`."""
    root = ET.Element("Response")
    _add(root, "Redirect", url, method="POST")
    return _document(root)


def empty() -> str:
    """An empty document: the answer to a status callback."""
    return _document(ET.Element("Response"))


def _add(parent: ET.Element, tag: str, text: str | None = None, **attrs: str | None) -> ET.Element:
    element = ET.SubElement(
        parent, tag, {k: _NOT_XML.sub("", v) for k, v in attrs.items() if v is not None}
    )
    if text is not None:
        element.text = _NOT_XML.sub("", text)
    return element


def _document(root: ET.Element) -> str:
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")
