"""Filter criteria (lambda-semantics.md §6): a table of (pattern, event, expected) rows, a table of
invalid patterns, and property tests for the pure matcher."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventd.patterns import Filter, PatternError, compile_filters

AB = {"a": [{"anything-but": ["Raining"]}]}
RANGE = {"a": [{"numeric": [">", 10, "<=", 20]}]}
OR_TOP = {"$or": [{"a": ["x"]}, {"b": ["y"]}]}
OR_REST = {"c": ["k"], "$or": [{"a": ["x"]}, {"b": ["y"]}]}
OR_NESTED = {"body": {"$or": [{"price": [{"numeric": [">", 10]}]}, {"tier": ["vip"]}]}}
OR_IN_OR = {"$or": [{"a": ["x"]}, {"$or": [{"b": ["y"]}, {"c": [{"prefix": "z"}]}]}]}
SQS = {"body": {"Temperature": [{"numeric": [">", 40]}]}, "attributes": {"ApproximateReceiveCount": ["1"]}}
SQS_EVENT = {"messageId": "m1", "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
             "body": {"City": "Seattle", "Temperature": 46}}
NOT_B = {"a": {"b": [{"exists": False}]}}

# (id, pattern, event, expected)
MATCH_ROWS: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    # exact values: strings are case-sensitive, numbers compare by their JSON text (§6.3)
    ("str-equal", {"a": ["x"]}, {"a": "x"}, True),
    ("str-case", {"a": ["x"]}, {"a": "X"}, False),
    ("str-missing", {"a": ["x"]}, {}, False),
    ("str-or-values", {"a": ["x", "y"]}, {"a": "y"}, True),
    ("str-no-trim", {"a": ["x"]}, {"a": " x"}, False),
    ("empty-str", {"a": [""]}, {"a": ""}, True),
    ("empty-str-not-null", {"a": [""]}, {"a": None}, False),
    ("null", {"a": [None]}, {"a": None}, True),
    ("null-not-missing", {"a": [None]}, {}, False),
    ("null-not-empty", {"a": [None]}, {"a": ""}, False),
    ("int", {"a": [5]}, {"a": 5}, True),
    ("int-vs-float", {"a": [5]}, {"a": 5.0}, False),
    ("float", {"a": [5.5]}, {"a": 5.5}, True),
    ("int-vs-numeric-string", {"a": [5]}, {"a": "5"}, False),
    ("string-vs-int", {"a": ["5"]}, {"a": 5}, False),
    ("true", {"a": [True]}, {"a": True}, True),
    ("true-not-1", {"a": [True]}, {"a": 1}, False),
    ("1-not-true", {"a": [1]}, {"a": True}, False),
    ("false", {"a": [False]}, {"a": False}, True),
    ("false-not-0", {"a": [False]}, {"a": 0}, False),
    ("value-vs-object", {"a": ["x"]}, {"a": {"x": "x"}}, False),
    # arrays in the event: any element
    ("array-any", {"a": ["x"]}, {"a": ["y", "x"]}, True),
    ("array-none", {"a": ["x"]}, {"a": ["y", "z"]}, False),
    ("array-empty", {"a": ["x"]}, {"a": []}, False),
    ("array-nested", {"a": ["x"]}, {"a": [["y"], ["x"]]}, True),
    ("array-numbers", {"a": [3]}, {"a": [1, 2, 3]}, True),
    ("array-intersection", {"a": ["p", "q"]}, {"a": ["q", "r"]}, True),
    # nesting, AND, extra fields
    ("nested", {"body": {"city": ["Seattle"]}}, {"body": {"city": "Seattle"}}, True),
    ("nested-mismatch", {"body": {"city": ["Seattle"]}}, {"body": {"city": "Boston"}}, False),
    ("json-pattern-plain-body", {"body": {"city": ["Seattle"]}}, {"body": "Seattle"}, False),
    ("plain-pattern-json-body", {"body": ["Seattle"]}, {"body": {"city": "Seattle"}}, False),
    ("plain-pattern-plain-body", {"body": ["hello"]}, {"body": "hello"}, True),
    ("deep", {"a": {"b": {"c": [1]}}}, {"a": {"b": {"c": 1}}}, True),
    ("deep-missing-middle", {"a": {"b": {"c": [1]}}}, {"a": {}}, False),
    ("nested-vs-null", {"a": {"b": [1]}}, {"a": None}, False),
    ("array-of-objects", {"a": {"b": [1], "c": [2]}}, {"a": [{"b": 0}, {"b": 1, "c": 2}]}, True),
    ("array-consistency", {"a": {"b": [1], "c": [2]}}, {"a": [{"b": 1, "c": 3}, {"b": 3, "c": 2}]}, False),
    ("nested-vs-scalar-array", {"a": {"b": [1]}}, {"a": [1, 2]}, False),
    ("and", {"a": ["x"], "b": ["y"]}, {"a": "x", "b": "y"}, True),
    ("and-one-fails", {"a": ["x"], "b": ["y"]}, {"a": "x", "b": "z"}, False),
    ("extra-fields-ignored", {"a": ["x"]}, {"a": "x", "z": {"deep": [1]}}, True),
    ("dotted-key-literal", {"a.b": ["x"]}, {"a": {"b": "x"}}, False),
    # prefix / suffix / equals-ignore-case
    ("prefix", {"a": [{"prefix": "us-"}]}, {"a": "us-east-1"}, True),
    ("prefix-miss", {"a": [{"prefix": "us-"}]}, {"a": "eu-west-1"}, False),
    ("prefix-case", {"a": [{"prefix": "us-"}]}, {"a": "US-east-1"}, False),
    ("prefix-number", {"a": [{"prefix": "1"}]}, {"a": 12}, False),
    ("prefix-array", {"a": [{"prefix": "us-"}]}, {"a": ["eu-1", "us-2"]}, True),
    ("prefix-empty", {"a": [{"prefix": ""}]}, {"a": "anything"}, True),
    ("suffix", {"a": [{"suffix": ".png"}]}, {"a": "cat.png"}, True),
    ("suffix-miss", {"a": [{"suffix": ".png"}]}, {"a": "cat.jpg"}, False),
    ("suffix-case", {"a": [{"suffix": ".png"}]}, {"a": "cat.PNG"}, False),
    ("ignore-case", {"a": [{"equals-ignore-case": "alice"}]}, {"a": "ALICE"}, True),
    ("ignore-case-miss", {"a": [{"equals-ignore-case": "alice"}]}, {"a": "Alicia"}, False),
    ("ignore-case-non-string", {"a": [{"equals-ignore-case": "1"}]}, {"a": 1}, False),
    # anything-but
    ("anything-but", AB, {"a": "Sunny"}, True),
    ("anything-but-hit", AB, {"a": "Raining"}, False),
    ("anything-but-missing", AB, {}, False),
    ("anything-but-null", AB, {"a": None}, True),
    ("anything-but-array-any", AB, {"a": ["Raining", "Sunny"]}, True),
    ("anything-but-array-all-hit", AB, {"a": ["Raining"]}, False),
    ("anything-but-single", {"a": [{"anything-but": "Raining"}]}, {"a": "Sunny"}, True),
    ("anything-but-single-hit", {"a": [{"anything-but": "Raining"}]}, {"a": "Raining"}, False),
    ("anything-but-numbers", {"a": [{"anything-but": [100, 200]}]}, {"a": 150}, True),
    ("anything-but-numbers-hit", {"a": [{"anything-but": [100, 200]}]}, {"a": 100}, False),
    ("anything-but-number-text", {"a": [{"anything-but": [100]}]}, {"a": "100"}, True),
    ("anything-but-object", AB, {"a": {"Raining": 1}}, False),
    # numeric: numbers only, compared as numbers
    ("numeric-eq", {"a": [{"numeric": ["=", 100]}]}, {"a": 100}, True),
    ("numeric-eq-float", {"a": [{"numeric": ["=", 100]}]}, {"a": 100.0}, True),
    ("numeric-eq-miss", {"a": [{"numeric": ["=", 100]}]}, {"a": 101}, False),
    ("numeric-string", {"a": [{"numeric": ["=", 100]}]}, {"a": "100"}, False),
    ("numeric-bool", {"a": [{"numeric": ["=", 1]}]}, {"a": True}, False),
    ("numeric-null", {"a": [{"numeric": ["<", 1]}]}, {"a": None}, False),
    ("range-low-open", RANGE, {"a": 10}, False),
    ("range-inside", RANGE, {"a": 10.5}, True),
    ("range-high-closed", RANGE, {"a": 20}, True),
    ("range-above", RANGE, {"a": 20.01}, False),
    ("range-closed-open-low", {"a": [{"numeric": [">=", 10, "<", 20]}]}, {"a": 10}, True),
    ("range-closed-open-high", {"a": [{"numeric": [">=", 10, "<", 20]}]}, {"a": 20}, False),
    ("numeric-lt", {"a": [{"numeric": ["<", 0]}]}, {"a": -1}, True),
    ("numeric-lt-miss", {"a": [{"numeric": ["<", 0]}]}, {"a": 0}, False),
    ("numeric-le", {"a": [{"numeric": ["<=", 0]}]}, {"a": 0}, True),
    ("numeric-ge", {"a": [{"numeric": [">=", 1.5]}]}, {"a": 1.5}, True),
    ("numeric-array", {"a": [{"numeric": [">", 0]}]}, {"a": [-1, 5]}, True),
    ("numeric-missing", {"a": [{"numeric": ["<=", 5]}]}, {}, False),
    ("numeric-big-event", {"a": [{"numeric": [">", 0]}]}, {"a": 10**30}, True),
    # exists: leaves only; null is present
    ("exists", {"a": [{"exists": True}]}, {"a": "x"}, True),
    ("exists-missing", {"a": [{"exists": True}]}, {}, False),
    ("exists-null", {"a": [{"exists": True}]}, {"a": None}, True),
    ("exists-object", {"a": [{"exists": True}]}, {"a": {"b": 1}}, False),
    ("exists-empty-array", {"a": [{"exists": True}]}, {"a": []}, False),
    ("exists-array", {"a": [{"exists": True}]}, {"a": [0]}, True),
    ("not-exists", {"a": [{"exists": False}]}, {}, True),
    ("not-exists-present", {"a": [{"exists": False}]}, {"a": "x"}, False),
    ("not-exists-null", {"a": [{"exists": False}]}, {"a": None}, False),
    ("not-exists-object", {"a": [{"exists": False}]}, {"a": {"b": 1}}, True),
    ("not-exists-empty-array", {"a": [{"exists": False}]}, {"a": []}, True),
    ("not-exists-nested-missing-parent", NOT_B, {}, True),
    ("not-exists-nested-present", NOT_B, {"a": {"b": 1}}, False),
    ("not-exists-nested-sibling", NOT_B, {"a": {"c": 1}}, True),
    ("not-exists-nested-empty-array", NOT_B, {"a": []}, True),
    ("not-exists-nested-scalar-array", NOT_B, {"a": [1]}, False),
    ("not-exists-nested-scalar", NOT_B, {"a": "plain"}, False),
    ("not-exists-nested-any-element", NOT_B, {"a": [{"b": 1}, {"c": 2}]}, True),
    ("value-or-missing-absent", {"a": ["x", {"exists": False}]}, {}, True),
    ("value-or-missing-value", {"a": ["x", {"exists": False}]}, {"a": "x"}, True),
    ("value-or-missing-other", {"a": ["x", {"exists": False}]}, {"a": "y"}, False),
    # wildcard (EventBridge; see module docstring)
    ("wildcard-suffix", {"a": [{"wildcard": "*.png"}]}, {"a": "dir/cat.png"}, True),
    ("wildcard-middle", {"a": [{"wildcard": "dir/*/file"}]}, {"a": "dir/x/file"}, True),
    ("wildcard-middle-miss", {"a": [{"wildcard": "dir/*/file"}]}, {"a": "dir/file"}, False),
    ("wildcard-empty-run", {"a": [{"wildcard": "a*b"}]}, {"a": "ab"}, True),
    ("wildcard-whole", {"a": [{"wildcard": "a*b"}]}, {"a": "abc"}, False),
    ("wildcard-escaped-star", {"a": [{"wildcard": "a\\*b"}]}, {"a": "a*b"}, True),
    ("wildcard-escaped-star-literal", {"a": [{"wildcard": "a\\*b"}]}, {"a": "axb"}, False),
    ("wildcard-escaped-backslash", {"a": [{"wildcard": "a\\\\*"}]}, {"a": "a\\zz"}, True),
    ("wildcard-regex-chars", {"a": [{"wildcard": "a.c*"}]}, {"a": "abc"}, False),
    ("wildcard-newline", {"a": [{"wildcard": "a*"}]}, {"a": "a\nb"}, True),
    ("wildcard-number", {"a": [{"wildcard": "*"}]}, {"a": 5}, False),
    # $or, at the top and nested, together with the rest of the pattern
    ("or-top-first", OR_TOP, {"a": "x"}, True),
    ("or-top-second", OR_TOP, {"b": "y"}, True),
    ("or-top-none", OR_TOP, {"a": "z", "b": "z"}, False),
    ("or-with-rest", OR_REST, {"a": "x", "c": "k"}, True),
    ("or-with-rest-fails", OR_REST, {"a": "x", "c": "j"}, False),
    ("or-with-rest-no-alt", OR_REST, {"c": "k"}, False),
    ("or-nested", OR_NESTED, {"body": {"price": 5, "tier": "vip"}}, True),
    ("or-nested-numeric", OR_NESTED, {"body": {"price": 50}}, True),
    ("or-nested-none", OR_NESTED, {"body": {"price": 5, "tier": "basic"}}, False),
    ("or-in-or", OR_IN_OR, {"c": "zebra"}, True),
    ("or-in-or-none", OR_IN_OR, {"c": "horse"}, False),
    ("or-exists-false", {"$or": [{"a": [{"exists": False}]}, {"a": ["x"]}]}, {"a": "y"}, False),
    ("or-exists-false-absent", {"$or": [{"a": [{"exists": False}]}, {"a": ["x"]}]}, {}, True),
    # records as the mapping hands them over
    ("sqs", SQS, SQS_EVENT, True),
    ("sqs-cold", SQS, {**SQS_EVENT, "body": {"City": "Seattle", "Temperature": 30}}, False),
    ("kinesis", {"data": {"type": ["order"]}, "partitionKey": [{"prefix": "eu"}]},
     {"data": {"type": "order", "id": 1}, "partitionKey": "eu-1", "sequenceNumber": "49"}, True),
    ("kinesis-non-json", {"data": {"type": ["order"]}}, {"data": "not json", "partitionKey": "p"}, False),
    ("dynamodb", {"dynamodb": {"Keys": {"Id": {"N": ["101"]}}}},
     {"eventName": "INSERT", "dynamodb": {"Keys": {"Id": {"N": "101"}}}}, True),
]


@pytest.mark.parametrize(("pattern", "event", "expected"), [r[1:] for r in MATCH_ROWS],
                         ids=[r[0] for r in MATCH_ROWS])
def test_match_table(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    assert compile_filters([pattern]).matches(event) is expected
    # the JSON text of the same pattern behaves the same (the `Pattern` string Lambda stores)
    assert compile_filters([json.dumps(pattern)]).matches(event) is expected


P1 = {"a": ["x"]}
P2 = '{"b": [{"numeric": [">", 1]}]}'
# (id, filters, event, expected)
FILTER_ROWS: list[tuple[str, list[dict[str, Any] | str], dict[str, Any], bool]] = [
    ("no-filters", [], {"anything": 1}, True),
    ("no-filters-empty-event", [], {}, True),
    ("first", [P1, P2], {"a": "x"}, True),
    ("second", [P1, P2], {"b": 2}, True),
    ("neither", [P1, P2], {"a": "y", "b": 0}, False),
    ("both", [P1, P2], {"a": "x", "b": 2}, True),
]


@pytest.mark.parametrize(("filters", "event", "expected"), [r[1:] for r in FILTER_ROWS],
                         ids=[r[0] for r in FILTER_ROWS])
def test_filters_are_ored(filters: list[dict[str, Any] | str], event: dict[str, Any], expected: bool) -> None:
    assert compile_filters(filters).matches(event) is expected


def _deep(levels: int) -> dict[str, Any]:
    pattern: dict[str, Any] = {"leaf": ["x"]}
    for _ in range(levels):
        pattern = {"n": pattern}
    return pattern


def _or_of(prefix: str, n: int) -> dict[str, Any]:
    return {"$or": [{f"{prefix}{i}": ["x"]} for i in range(n)]}


# (id, pattern, fragment of the PatternError message)
INVALID_ROWS: list[tuple[str, Any, str]] = [
    ("bad-json", '{"a": [1,', "pattern is not valid JSON"),
    ("json-nan", '{"a": [NaN]}', "NaN is not a JSON number"),
    ("json-string", '"just a string"', "pattern must be a JSON object, got string"),
    ("json-null", "null", "pattern must be a JSON object, got null"),
    ("json-array", "[]", "pattern must be a JSON object, got array"),
    ("not-a-pattern", 5, "pattern must be a JSON object, got number"),
    ("empty-pattern", {}, "empty object"),
    ("empty-nested", {"a": {}}, "a: empty object"),
    ("empty-leaf", {"a": []}, "a: empty array"),
    ("leaf-string", {"a": "x"}, "a: must be an object of fields or an array of values, got string"),
    ("leaf-number", {"a": {"b": 5}}, "a.b: must be an object of fields or an array of values, got number"),
    ("leaf-null", {"a": None}, "a: must be an object of fields or an array of values, got null"),
    ("nested-array-value", {"body": {"price": [[1]]}}, "body.price: match value must be a string"),
    ("nan-value", {"a": [float("nan")]}, "a: match value nan is not a JSON number"),
    ("non-string-key", {1: ["x"]}, "key 1 must be a string"),
    ("two-operators", {"a": [{"prefix": "x", "suffix": "y"}]}, "exactly one operator"),
    ("no-operator", {"a": [{}]}, "exactly one operator"),
    ("unknown-operator", {"a": [{"bogus": 1}]}, "a: unknown operator 'bogus'"),
    ("prefix-number", {"a": [{"prefix": 5}]}, "a: prefix expects a string, got number"),
    ("suffix-null", {"a": [{"suffix": None}]}, "a: suffix expects a string, got null"),
    ("prefix-ignore-case", {"a": [{"prefix": {"equals-ignore-case": "x"}}]}, "not supported by Lambda"),
    ("suffix-ignore-case", {"a": [{"suffix": {"equals-ignore-case": "x"}}]}, "not supported by Lambda"),
    ("ignore-case-array", {"a": [{"equals-ignore-case": ["x"]}]}, "equals-ignore-case expects a string"),
    ("wildcard-number", {"a": [{"wildcard": 1}]}, "wildcard expects a string, got number"),
    ("wildcard-double-star", {"a": [{"wildcard": "a**b"}]}, "consecutive * are not allowed"),
    ("wildcard-bad-escape", {"a": [{"wildcard": "a\\b"}]}, "backslash may only escape"),
    ("wildcard-trailing-backslash", {"a": [{"wildcard": "a\\"}]}, "backslash may only escape"),
    ("anything-but-empty", {"a": [{"anything-but": []}]}, "non-empty array"),
    ("anything-but-null", {"a": [{"anything-but": [None]}]}, "strings or numbers, got null"),
    ("anything-but-bool", {"a": [{"anything-but": True}]}, "strings or numbers, got boolean"),
    ("anything-but-nested-list", {"a": [{"anything-but": [["x"]]}]}, "strings or numbers, got array"),
    ("anything-but-prefix", {"a": [{"anything-but": {"prefix": "x"}}]},
     "anything-but with prefix is not supported by Lambda"),
    ("numeric-lone-operator", {"data": {"price": [{"numeric": [">"]}]}},
     "data.price: numeric expects pairs of an operator and a number"),
    ("numeric-empty", {"a": [{"numeric": []}]}, "numeric expects pairs"),
    ("numeric-not-list", {"a": [{"numeric": ">"}]}, "numeric expects pairs"),
    ("numeric-unknown-op", {"a": [{"numeric": ["~", 1]}]}, "unknown operator '~'"),
    ("numeric-string-operand", {"a": [{"numeric": [">", "5"]}]}, "> is followed by string"),
    ("numeric-bool-operand", {"a": [{"numeric": [">", True]}]}, "> is followed by boolean"),
    ("numeric-swapped-pair", {"a": [{"numeric": [5, ">"]}]}, "unknown operator 5"),
    ("numeric-two-lows", {"a": [{"numeric": [">", 1, ">", 2]}]}, "numeric range must be"),
    ("numeric-high-first", {"a": [{"numeric": ["<", 1, ">", 0]}]}, "numeric range must be"),
    ("numeric-eq-in-range", {"a": [{"numeric": ["=", 1, "<", 2]}]}, "numeric range must be"),
    ("numeric-inverted", {"a": [{"numeric": [">", 5, "<", 1]}]}, "bottom 5 must be less than top 1"),
    ("numeric-empty-range", {"a": [{"numeric": [">=", 5, "<=", 5]}]}, "must be less than top"),
    ("numeric-three-bounds", {"a": [{"numeric": [">", 1, "<", 2, "<", 3]}]}, "at most a lower and an upper"),
    ("numeric-out-of-range", {"a": [{"numeric": ["=", 6e9]}]}, "outside"),
    ("exists-string", {"a": [{"exists": "yes"}]}, "a: exists expects true or false, got string"),
    ("exists-null", {"a": [{"exists": None}]}, "exists expects true or false, got null"),
    ("cidr", {"a": [{"cidr": "10.0.0.0/24"}]}, "cidr is an EventBridge operator"),
    ("or-empty", {"$or": []}, "$or: must be a non-empty array of pattern objects"),
    ("or-object", {"$or": {"a": ["x"]}}, "$or: must be a non-empty array"),
    ("or-member-string", {"$or": ["x"]}, "$or[0]: must be a pattern object, got string"),
    ("or-nested-path", {"x": {"$or": [{"a": ["y"]}, {"a": []}]}}, "x.$or[1].a: empty array"),
    ("too-long-json", '{"a": ["' + "x" * 5000 + '"]}', "the limit is 4096"),
    ("too-long-dict", {"a": ["x" * 5000]}, "characters as JSON; the limit is 4096"),
    ("too-deep", _deep(70), "nested deeper than 64"),
    ("too-many-combinations", {"a": _or_of("p", 11), "b": _or_of("q", 11), "c": _or_of("r", 11)},
     "$or expands to 1331 combinations"),
]


@pytest.mark.parametrize(("pattern", "fragment"), [r[1:] for r in INVALID_ROWS], ids=[r[0] for r in INVALID_ROWS])
def test_invalid_pattern(pattern: Any, fragment: str) -> None:
    with pytest.raises(PatternError) as caught:
        compile_filters([pattern])
    assert fragment in str(caught.value)


def test_error_names_the_filter_when_there_are_several() -> None:
    with pytest.raises(PatternError, match=r"^filter 2: a: empty array"):
        compile_filters([{"a": ["x"]}, {"a": []}])


def test_too_many_filters() -> None:
    with pytest.raises(PatternError, match="11 filters; a mapping allows at most 10"):
        compile_filters([{"a": ["x"]}] * 11)
    compile_filters([{"a": ["x"]}] * 10)


def test_filters_must_be_a_list() -> None:
    with pytest.raises(PatternError, match="must be a list of patterns, got string"):
        compile_filters('{"a": ["x"]}')  # type: ignore[arg-type]  # the mistake under test


def test_pattern_error_is_a_value_error() -> None:
    assert issubclass(PatternError, ValueError)


def test_duplicate_json_keys_last_wins() -> None:
    f = compile_filters(['{"a": ["x"], "a": ["y"]}'])
    assert f.matches({"a": "y"}) and not f.matches({"a": "x"})


def test_filter_reports_fields_and_emptiness() -> None:
    f = compile_filters([{"body": {"a": ["x"]}}, {"$or": [{"messageId": ["1"]}, {"attributes": {"x": ["y"]}}]}])
    assert f.fields == {"body", "messageId", "attributes"}
    assert not f.is_empty
    assert compile_filters([]).is_empty and Filter().matches({"x": 1})


def test_matching_never_reparses_the_pattern(monkeypatch: pytest.MonkeyPatch) -> None:
    f = compile_filters(['{"a": [{"prefix": "x"}], "b": {"c": [{"numeric": [">", 1]}]}}'])

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pattern parsed on the hot path")

    monkeypatch.setattr(json, "loads", forbidden)
    monkeypatch.setattr(json, "dumps", forbidden)
    assert f.matches({"a": "xy", "b": {"c": 2}})
    assert not f.matches({"a": "xy", "b": {"c": 1}})


def test_event_is_not_modified() -> None:
    event = {"a": [["x"], {"b": 1}], "c": {"d": []}}
    before = json.dumps(event)
    compile_filters([{"a": ["x"], "c": {"d": [{"exists": False}]}}]).matches(event)
    assert json.dumps(event) == before


# -- properties -------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from("abc"), inner, max_size=3), max_leaves=10)
numbers = st.one_of(st.integers(-(10**9), 10**9), st.floats(-5e9, 5e9, allow_nan=False))


@given(scalars, st.lists(scalars, max_size=3))
def test_exact_value_matches_itself_alone_or_in_an_array(value: Any, others: list[Any]) -> None:
    f = compile_filters([{"k": [value]}])
    assert f.matches({"k": value})
    assert f.matches({"k": [*others, value]})


@given(st.one_of(st.text(max_size=4), st.integers(-5, 5)), st.one_of(st.text(max_size=4), st.integers(-5, 5)))
def test_anything_but_is_the_complement_of_exact_for_present_values(excluded: Any, value: Any) -> None:
    exact = compile_filters([{"k": [excluded]}]).matches({"k": value})
    assert compile_filters([{"k": [{"anything-but": excluded}]}]).matches({"k": value}) is not exact


@given(numbers, numbers, numbers)
def test_numeric_range_agrees_with_python(a: float, b: float, x: float) -> None:
    low, high = min(a, b), max(a, b)
    if low == high:
        return
    f = compile_filters([{"k": [{"numeric": [">", low, "<=", high]}]}])
    assert f.matches({"k": x}) is (low < x <= high)


@given(st.dictionaries(st.sampled_from("kxy"), json_values, max_size=3))
def test_exists_true_and_false_partition_every_event(event: dict[str, Any]) -> None:
    present = compile_filters([{"k": [{"exists": True}]}]).matches(event)
    absent = compile_filters([{"k": [{"exists": False}]}]).matches(event)
    assert present is not absent


@given(st.text(alphabet="ab.-", max_size=4), st.text(alphabet="ab.-", max_size=6))
def test_wildcard_star_at_one_end_is_prefix_or_suffix(affix: str, value: str) -> None:
    event = {"k": value}
    assert compile_filters([{"k": [{"wildcard": affix + "*"}]}]).matches(event) is value.startswith(affix)
    assert compile_filters([{"k": [{"wildcard": "*" + affix}]}]).matches(event) is value.endswith(affix)


leaf_patterns = st.lists(st.one_of(scalars, st.sampled_from([
    {"prefix": "a"}, {"exists": True}, {"exists": False}, {"numeric": [">", 0]}, {"anything-but": "a"},
])), min_size=1, max_size=3)


@given(st.lists(st.dictionaries(st.sampled_from("kx"), leaf_patterns, min_size=1, max_size=2), max_size=4),
       st.dictionaries(st.sampled_from("kxy"), json_values, max_size=3))
def test_a_filter_list_is_the_or_of_its_patterns(pattern_list: list[dict[str, Any]], event: dict[str, Any]) -> None:
    combined = compile_filters(list(pattern_list)).matches(event)
    singles = [compile_filters([p]).matches(event) for p in pattern_list]
    assert combined is (any(singles) or not pattern_list)
    # an $or of the same patterns (when there are several) decides the same way
    if len(pattern_list) > 1:
        assert compile_filters([{"$or": pattern_list}]).matches(event) is any(singles)
