"""JSON bodies of no fixed shape: integers msgpack cannot hold are read as floats (a
provider's webhook must never turn into a 500 when its record is written)."""

from __future__ import annotations

import random

from omni import jsonbody


def test_integers_beyond_64_bits_are_read_as_floats_and_every_other_value_as_sent() -> None:
    rng = random.Random(16)
    for digits in range(1, 40):
        for _ in range(20):
            value = rng.randrange(10 ** (digits - 1), 10**digits) * rng.choice((1, -1))
            text = str(value)
            number = text.encode()
            body = b'{"n": %s, "in_a_string": "%s", "list": [1, %s]}' % (number, number, number)
            parsed = jsonbody.parse(body)
            fits = -(2**63) <= value < 2**64
            expected = value if fits else float(value)
            assert parsed == {"n": expected, "in_a_string": text, "list": [1, expected]}, text
            assert type(parsed["n"]) is (int if fits else float), text


def test_a_body_without_a_long_number_is_decoded_as_it_is() -> None:
    # Digit runs of up to 18 (ids, epoch milliseconds) and digits that are not ASCII
    # are no integer msgpack cannot hold: the body is not rewritten.
    body = '{"id": "17841400000000001", "time": 1767225599688, "t": "٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣٣"}'
    raw = body.encode()
    assert jsonbody.widen_numbers(raw) is raw
    assert jsonbody.parse(raw)["time"] == 1767225599688
