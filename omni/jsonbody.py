"""Every JSON document a client or channel sends is decoded here, one way, with the
documented limits (README "Limits"):

- size: `[limits] body_max` bytes per HTTP body (aiohttp refuses more: 413), a socket
  frame its own `FRAME_MAX`;
- nesting: at most `DEPTH_MAX` levels of arrays and objects (deeper: 400). No model
  needs more than a few, and a decoder asked to recurse 5,000 levels raises
  RecursionError, which would otherwise surface as a 500;
- field lengths and shapes: the model's (`msgspec.Meta`): 422 naming the field;
- numbers: an integer beyond 64 bits (which no stored record can hold) is read as the
  floating-point number it is to JavaScript, so a field that must be an integer says
  so with a 422; an integral float (3.0) is the integer it equals, as JSON Schema says;
- not JSON at all (syntax, invalid UTF-8, NaN): 400. A duplicated key keeps its last
  value, as every JSON parser in the path does.

Pure: no aiohttp, no Redis, so a channel's protocol module may use it too.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

import msgspec

from omni.errors import BadRequest, ValidationFailed

T = TypeVar("T")
DEPTH_MAX = 32

_AT = re.compile(r" - at (?:`key` in )?`\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"missing required field `(?P<name>[^`]+)`")
_UNKNOWN = re.compile(r"unknown field `(?P<name>[^`]+)`")
# A JSON string (brackets inside one are text, not structure), an unterminated one
# running to the end: possessive, and never restarted inside a string, so any body is
# scanned in linear time. Then everything that is neither an opening nor a closing bracket.
_STR = rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)'
_STRING = re.compile(_STR, re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
# Every ASCII digit as "0", any other byte as ".": a run of 19 digits is then a plain
# substring search, where the regex \d{19} tried each position of a digit run again (8
# of the 10 µs an Instagram webhook's JSON took, ids and times being digit runs).
_DIGIT_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x2E for b in range(256))
_LONG_DIGITS = b"0" * 19
_STRING_OR_LONG_INTEGER = re.compile(_STR + rb"|(-?\d{19,})(?![.eE\d])", re.DOTALL)
_INT_RANGE = range(-(2**63), 2**64)


def problem_field(message: str) -> str | None:
    """The JSON path msgspec names in a validation error, as `items[0].sku`."""
    at = _AT.search(message)
    path = at.group("path").lstrip(".") if at else ""
    named = _MISSING.search(message) or _UNKNOWN.search(message)
    if named:
        path = f"{path}.{named.group('name')}" if path else named.group("name")
    return path or None


def too_deep(body: bytes) -> bool:
    """Arrays and objects nest deeper than DEPTH_MAX in `body`. A body with few
    brackets cannot (the usual case, counted in C); otherwise the brackets outside
    strings are walked."""
    if body.count(b"[") + body.count(b"{") <= DEPTH_MAX:
        return False
    level = 0
    for bracket in _STRING.sub(b"", body).translate(None, _NOT_BRACKET):
        level += 1 if bracket in b"[{" else -1
        if level > DEPTH_MAX:
            return True
    return False


def check_depth(body: bytes | str) -> None:
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if too_deep(raw):
        raise BadRequest(f"the JSON nests deeper than {DEPTH_MAX} levels")


def _widen(token: re.Match[bytes]) -> bytes:
    text = token.group(0)
    if text.startswith(b'"') or int(text) in _INT_RANGE:
        return text
    return text + b".0"


def widen_numbers(body: bytes | str) -> bytes | str:
    """Integers outside -2**63..2**64-1 as floats: msgspec decodes integers of any size,
    and a record msgpack cannot write would be a 500. Only a body with a run of 19
    digits is rewritten (strings are kept as they are: an id may be digits)."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if _LONG_DIGITS not in raw.translate(_DIGIT_AS_ZERO):
        return body
    # The long integers outside strings (findall stays in C; a string matches as "").
    if all(not n or int(n) in _INT_RANGE for n in _STRING_OR_LONG_INTEGER.findall(raw)):
        return body
    return _STRING_OR_LONG_INTEGER.sub(_widen, raw)


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def parse(body: bytes | str, what: str = "the body", field: str | None = None) -> Any:
    """Decode JSON of no fixed shape (a provider's webhook, a JSON form field), with the
    same limits: BadRequest (400) naming `what` if it is not JSON or nests too deep. An
    escaped lone surrogate is read, as the providers' own JSON parsers read it."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if too_deep(raw):
        raise BadRequest(f"{what} nests deeper than {DEPTH_MAX} levels", field=field)
    widened = widen_numbers(raw)
    try:
        return msgspec.json.decode(widened)
    except msgspec.DecodeError as exc:
        refusal = exc
    try:
        # A provider may escape half of a surrogate pair ("\ud83d" in a cut emoji): the
        # stdlib reads it as the lone code point (storing it is omni.text's business),
        # where msgspec refuses. NaN and Infinity are still not JSON.
        return json.loads(widened, parse_constant=_not_json)
    except ValueError:
        raise BadRequest(f"{what} is not valid JSON: {refusal}", field=field) from None


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode(body: bytes | str, kind: type[T]) -> T:
    """Decode JSON into `kind`: BadRequest (400) if it is not JSON or nests too deep,
    ValidationFailed (422, naming the field, e.g. `items[0].sku`) if it breaks the
    schema."""
    check_depth(body)
    body = widen_numbers(body)
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        # Typed decoding stops at the first schema error, even in a body that is not
        # JSON at all (`{"bogus": ` is "unknown field"): malformed is 400, not 422.
        try:
            untyped = msgspec.json.decode(body)
        except msgspec.DecodeError as bad:
            raise BadRequest(f"the body is not valid JSON: {bad}") from None
        if "got `float`" in str(exc):
            # JSON has one number type: 3.0 is the integer 3 to JSON Schema (and to the
            # OpenAPI document's "integer"), so it is one to omni too. Never on the
            # hot path: only a body that failed typed decoding comes here.
            try:
                return msgspec.convert(_integral(untyped), kind)
            except msgspec.ValidationError as again:
                exc = again
        message = _AT.sub(lambda at: " as a key" if "`key`" in at.group(0) else "", str(exc))
        raise ValidationFailed(message, field=problem_field(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
