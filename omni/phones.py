"""Phone numbers: the one way omni reads a number, whoever wrote it and however.

SMS, WhatsApp and voice all key customers by phone, and a profile's verified phone joins
a caller to their customer (omni.identity), so a number must come out the same however it
was written: `+44 (0)20 7946 0958`, `+442079460958` and `020 7946 0958` read in the UK are
one number. Numbers are parsed with `phonenumbers` (Google's libphonenumber metadata),
never a pattern of our own, and kept in E.164 (`+442079460958`).

Which country a national number (no `+`) is read in, first found:

    the customer's locale, when it names a region   "fr-FR" reads 06 12 34 56 78 as +33…
    `[identity] default_region`                     "US" reads (415) 555-0100 as +1415…
    none                                            only +international numbers are read

Only a number libphonenumber holds valid for its country is accepted (`+1234567` is
not one). The international dialling prefix of the region is understood (00 in France,
011 in the US), so `0033 6 12 34 56 78` read in France is +33612345678.

Channel identities on phone channels are canonical too: voice and SMS external ids are
E.164 (a Voice SDK `client:`, `sip:` or `whatsapp:` address, or a short code, stays as
it came); a
WhatsApp `wa_id` is the E.164 digits without the `+`, as Meta writes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import phonenumbers

PHONE_CHANNELS = frozenset({"voice", "sms", "whatsapp"})  # external ids that are numbers
_DIGITS_CHANNELS = frozenset({"whatsapp"})  # ids written as E.164 digits without the "+"
RAW_MAX = 64  # longer is not a phone number; libphonenumber refuses 250+ anyway
_LOCALE_PART = re.compile(r"[-_]")
# libphonenumber's matcher finds nothing in a text without a decimal digit (its pattern
# needs one), nor, read without a region, in one without a plus sign ("+" or the
# full-width U+FF0B: parsing with region ZZ refuses a number that does not start with
# one). Most messages are such texts, and its scan costs ~100 µs of a ~600 µs ingest.
_DIGIT = re.compile(r"\d")
_PLUS_SIGNS = ("+", "\uff0b")


def regions() -> frozenset[str]:
    """Every region code libphonenumber has metadata for ("US", "FR", "GB", …)."""
    return frozenset(phonenumbers.SUPPORTED_REGIONS)


def region_of_locale(locale: str | None) -> str | None:
    """The region a locale names ("fr-FR" and "pt_BR" do; "fr" does not)."""
    if not locale:
        return None
    for part in reversed(_LOCALE_PART.split(locale.strip())[1:]):
        if len(part) == 2 and part.upper() in phonenumbers.SUPPORTED_REGIONS:
            return part.upper()
    return None


def normalize_phone(
    raw: str, region: str | None = None, *, locale: str | None = None
) -> str | None:
    """E.164 for what someone wrote, or None when it is not a valid number. A national
    number is read in the locale's region, else in `region` (see the module doc)."""
    if not raw or len(raw) > RAW_MAX:
        return None
    where = region_of_locale(locale) or (region or None)
    try:
        number = phonenumbers.parse(raw, where)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def identity_phone(channel: str, external_id: str) -> str | None:
    """The E.164 number a phone channel's identity is, or None (not a phone channel, or
    not a number: a Voice SDK client, a SIP address, a short code)."""
    if channel not in PHONE_CHANNELS or ":" in external_id:
        return None
    if channel in _DIGITS_CHANNELS and external_id.isdigit():
        external_id = "+" + external_id
    return normalize_phone(external_id)


def plus_restored(raw: str) -> str:
    """`raw` with the leading "+" a URL query string turned into a space put back
    (`?external_id=+14155550123` unescaped arrives as " 14155550123")."""
    if raw[:1] == " " and raw[1:2].isdigit():
        return "+" + raw[1:]
    return raw


def canonical_external_id(channel: str, external_id: str, region: str | None = None) -> str:
    """The form a channel identity is stored under: phone channels' numbers canonical
    (see the module doc), anything else exactly as given."""
    if channel not in PHONE_CHANNELS or ":" in external_id:
        return external_id  # a scheme (client:, sip:, whatsapp:) names something else
    raw = plus_restored(external_id)
    if channel in _DIGITS_CHANNELS and raw.isdigit():
        raw = "+" + raw
    phone = normalize_phone(raw, region)
    if phone is None:
        return external_id
    return phone[1:] if channel in _DIGITS_CHANNELS else phone


def could_hold_phone(text: str, region: str | None = None) -> bool:
    """False when libphonenumber could find no number in `text` (so it need not look)."""
    if not region and not any(plus in text for plus in _PLUS_SIGNS):
        return False
    return _DIGIT.search(text) is not None


def find_phones(text: str, region: str | None = None) -> Iterator[str]:
    """Each valid number written in free text, in E.164, in the order written."""
    if not could_hold_phone(text, region):
        return
    # "ZZ": no region, so only numbers written with their country code are found.
    for match in phonenumbers.PhoneNumberMatcher(text, region or "ZZ"):
        number = match.number
        if phonenumbers.is_valid_number(number):
            yield phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
