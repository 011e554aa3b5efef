"""Query parameters and conditional-request headers read as they always were, over
generated inputs: `query_int` with its pattern compiled once, and `not_modified` with no
list of tags made when there is no If-None-Match."""

from __future__ import annotations

import random
import re
from urllib.parse import quote

from aiohttp.test_utils import make_mocked_request

from omni.errors import BadRequest
from omni.web_io import not_modified, query_int


def _query_int_before(raw: str | None, low: int, high: int) -> int | str:
    """What query_int answered before (the value, or its problem's detail)."""
    if raw is None:
        return 20
    if not re.fullmatch(r"\d{1,9}", raw):
        return f"limit must be a whole number from {low} to {high}"
    value = int(raw)
    if not low <= value <= high:
        return f"limit must be from {low} to {high}, not {value}"
    return value


def test_query_int_reads_generated_values_as_before() -> None:
    rng = random.Random(16)
    pieces = ["0", "1", "7", "50", "100", "101", "999999999", "1234567890", "-1", "+3", " 5",
              "5 ", "٣", "1e3", "0x10", "", "a", "5\n", "05", "00000000001"]  # fmt: skip
    for _ in range(2000):
        raw = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 3)))
        low, high = rng.choice([(1, 100), (0, 10), (1, 10**9)])
        query = "" if rng.random() < 0.1 else f"?limit={quote(raw)}"
        request = make_mocked_request("GET", "/v1/x" + query)
        expected = _query_int_before(request.query.get("limit"), low, high)
        try:
            got: int | str = query_int(request, "limit", default=20, low=low, high=high)
        except BadRequest as problem:
            got = problem.detail
        assert got == expected, (raw, low, high)


def _not_modified_before(wanted: str, tag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in wanted.split(",")]
    return "*" in tags or tag in tags


def test_not_modified_reads_generated_headers_as_before() -> None:
    rng = random.Random(16)
    tags = ['"3"', '"4"', 'W/"3"', "*", "", " ", '"33"', "3", 'w/"3"']
    for _ in range(2000):
        headers = {}
        if rng.random() < 0.7:
            chosen = [rng.choice(tags) for _ in range(rng.randrange(0, 4))]
            headers["If-None-Match"] = rng.choice([",", ", ", " ,"]).join(chosen)
        request = make_mocked_request("GET", "/v1/x", headers=headers)
        expected = _not_modified_before(headers.get("If-None-Match", ""), '"3"')
        assert not_modified(request, '"3"') == expected, headers
