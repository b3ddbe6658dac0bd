"""Handler processes decode events with orjson when it agrees with json.loads (the Lambda Python
runtime's parser) and with json.loads otherwise: the event a handler sees must be json.loads's."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from eventd.runtimes.bootstrap import _loads

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@given(values)
def test_events_decode_exactly_as_json_loads_does(value: Any) -> None:
    raw = json.dumps(value).encode()
    assert _same(_loads(raw), json.loads(raw))


def test_the_cases_orjson_reads_differently() -> None:
    for raw in (b'{"big": 123456789012345678901234567890}', b"[NaN, Infinity, -Infinity]", b'"\\ud800"',
                b'{"a": 1e400}', b'{"min": -9223372036854775808, "max": 18446744073709551615}'):
        assert _same(_loads(raw), json.loads(raw)), raw
    assert type(_loads(b"123456789012345678901234567890")) is int
