"""hypothesis strategies that mutate the channels' fixtures (tests/payloads/<channel>/):
types swapped, fields missing or null, huge strings, deep nesting, unknown event kinds,
numbers out of range, duplicated keys, invalid UTF-8. The test signs what they make,
so what is exercised is the parsing, not the signature check.

`corpus` draws a fixed list of examples (derandomized: CI sees the same ones every
run), which the async tests then send through the real app."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

Path = tuple[Any, ...]

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
ANY_JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
OUT_OF_RANGE = st.sampled_from(
    [2**63, 2**64, -(2**63) - 1, 10**30, -(10**30), 1e308, -1e308, 5e-324, -1, 0, 2**53 + 1]
)
HUGE = st.sampled_from(["x" * 70_000, "\U0001f600" * 20_000, "\x00" * 1000, " " * 50_000])


def nested(depth: int, leaf: Any = 1) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def paths(value: Any, prefix: Path = ()) -> list[Path]:
    """Every node's path (keys and indexes), the root's included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


def _set(root: Any, path: Path, new: Any) -> Any:
    if not path:
        return new
    parent = root
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = new
    return root


def _delete(root: Any, path: Path) -> Any:
    if not path:
        return {}
    parent = root
    for step in path[:-1]:
        parent = parent[step]
    del parent[path[-1]]
    return root


def _rename(root: Any, path: Path, name: str) -> Any:
    """Rename the key at `path` (an unknown event kind or field)."""
    if not path or not isinstance(path[-1], str):
        return root
    parent = root
    for step in path[:-1]:
        parent = parent[step]
    parent[name] = parent.pop(path[-1])
    return root


@st.composite
def mutated(draw: st.DrawFn, bases: Sequence[Any]) -> Any:
    """A fixture's JSON with one to three mutations."""
    value = copy.deepcopy(draw(st.sampled_from(list(bases))))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths(value)))
        how = draw(st.sampled_from(["swap", "null", "delete", "huge", "deep", "rename", "number"]))
        if how == "swap":
            value = _set(value, path, draw(ANY_JSON))
        elif how == "null":
            value = _set(value, path, None)
        elif how == "delete":
            value = _delete(value, path)
        elif how == "huge":
            value = _set(value, path, draw(HUGE))
        elif how == "deep":
            value = _set(value, path, nested(draw(st.integers(20, 40))))
        elif how == "rename":
            kind = draw(st.sampled_from(["message_edit", "unknown_kind", "", "text", "__proto__"]))
            value = _rename(value, path, kind)
        else:
            value = _set(value, path, draw(OUT_OF_RANGE))
    return value


def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def json_bodies(draw: st.DrawFn, bases: Sequence[Any]) -> bytes:
    """Mutated JSON bytes, sometimes also broken below the JSON level."""
    value = draw(mutated(bases))
    body = _dump(value)
    how = draw(
        st.sampled_from(["as is", "as is", "invalid utf-8", "duplicate key", "cut", "very deep"])
    )
    if how == "invalid utf-8" and b'": "' in body:
        at = body.index(b'": "') + 4
        body = body[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + body[at:]
    elif how == "duplicate key" and isinstance(value, dict) and value:
        key = next(iter(value))
        twin = _dump({key: draw(ANY_JSON)})[1:-1]
        body = body[:-1] + b", " + twin + b"}"
    elif how == "very deep" and body.endswith(b"}") and len(body) > 2:
        # (built as bytes: json.dumps itself cannot nest 5,000 levels)
        body = body[:-1] + b', "deeper": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    elif how == "cut":
        body = body[: draw(st.integers(0, max(0, len(body) - 1)))]
    return body


TWILIO_VOICE_FIELDS = ["CallStatus", "Digits", "SpeechResult", "Confidence", "DialCallStatus",
                       "From", "Whatever"]  # fmt: skip


@st.composite
def forms(
    draw: st.DrawFn, bases: Sequence[list[tuple[str, str]]], names: Sequence[str] = ()
) -> list[tuple[str, str]]:
    """A provider's form (Twilio's, Mailgun's) with one to three mutations; `names`: the
    fields an unknown value is given to (Twilio's voice fields by default)."""
    params = list(draw(st.sampled_from(list(bases))))
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["drop", "value", "huge", "unknown", "duplicate", "empty"]))
        at = draw(st.integers(0, max(0, len(params) - 1))) if params else 0
        if how == "drop" and params:
            params.pop(at)
        elif how == "value" and params:
            params[at] = (params[at][0], draw(st.text(max_size=30)))
        elif how == "huge" and params:
            params[at] = (params[at][0], draw(HUGE))
        elif how == "unknown":
            name = draw(st.sampled_from(list(names) or TWILIO_VOICE_FIELDS))
            value = draw(st.sampled_from(["exploded", "-1", "1e999", "NaN", "", "☎" * 300]))
            params.append((name, value))
        elif how == "duplicate" and params:
            params.append((params[at][0], draw(st.text(max_size=10))))
        elif how == "empty" and params:
            params[at] = (params[at][0], "")
    return params


def hypothesis_pairs(
    names: Sequence[str],
    params: Callable[[str], list[tuple[str, str]]],
    fields: Sequence[str] = (),
) -> st.SearchStrategy[tuple[str, list[tuple[str, str]]]]:
    """(fixture name, its form mutated): the name says which URL Twilio signed."""
    return st.sampled_from(list(names)).flatmap(
        lambda name: forms([params(name)], fields).map(lambda mutated: (name, mutated))
    )


def encode_form(params: Sequence[tuple[str, str]]) -> bytes:
    return "&".join(
        quote(k, safe="", errors="surrogatepass") + "=" + quote(v, safe="", errors="surrogatepass")
        for k, v in params
    ).encode()


def corpus(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """`count` examples of `strategy`, the same ones every run."""
    found: list[Any] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example: Any) -> None:
        found.append(example)

    collect()
    return found
