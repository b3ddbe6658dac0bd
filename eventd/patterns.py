"""Filter criteria for event source mappings: the EventBridge pattern language as Lambda documents it.

Pure: `compile_filters` validates each pattern once into a tree of small matchers; `Filter.matches`
runs per record without looking at the pattern again. The caller passes the record as the filter sees
it (lambda-semantics.md §6.3): SQS `body` / Kinesis `data` already parsed when JSON, the raw string if not.
§6 rules where it speaks; choices marked *eventd* follow EventBridge or LocalStack's engine where it is silent.

- Filters are ORed (none: everything passes); pattern keys are ANDed; values in a leaf array are ORed;
  `$or` (any level) needs one alternative to match the same object together with the rest.
- Exact matching: strings character by character; numbers by their JSON text, so 300 and 300.0 differ
  (§6.3). Events arrive parsed, so eventd compares type and value: an int never equals a float (300.0
  and 3.0e2 cannot be told apart), `true` never equals 1, `null` matches only an explicit null.
  Numeric equality is `{"numeric": ["=", 300]}`.
- An array in the event matches when any element does; nested arrays are flattened. *eventd*: a pattern
  object over an array of objects needs one element to match all of it (EventBridge's array consistency);
  over a scalar or null it never matches, as §4.6/§5.7 drop a non-JSON body/data a JSON pattern targets.
- `exists` looks at leaves only (§6.3): a missing key, an object, `[]` or an array of objects are absent;
  `null` is present (LocalStack). Every other operator fails on an absent field (anything-but: §6.3).
- `anything-but`: a string, number or non-empty list of them (no null/booleans, as EventBridge). *eventd*:
  compares like exact matching; a present null or boolean always passes it.
- `numeric`: JSON numbers only (not numeric strings or booleans); operands within ±5.0e9; one comparison
  or `>`/`>=` then `<`/`<=` with bottom < top (EventBridge's grammar).
- `prefix`, `suffix`, `equals-ignore-case` (*eventd*: `str.lower()`), `wildcard` match strings only.
  *eventd*: `wildcard` is accepted though §6 does not list it for Lambda: `*` is any run of characters,
  `\\*` a literal star, `\\\\` a backslash; `**` is refused as EventBridge does.
- Refused as unsupported by Lambda (§6.3): `cidr`, operators inside `anything-but`, `prefix`/`suffix`
  with `equals-ignore-case`.
- Limits: pattern JSON <= 4096 characters (a dict measured as compact JSON); <= 10 filters (quota ceiling).
  *eventd*: <= 1000 `$or` combinations (EventBridge; UNCONFIRMED for Lambda), nesting <= 64, no empty
  objects or arrays, a top-level `{}` included. Duplicate JSON keys: the last wins (§6.1).
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

#: Longest pattern Lambda accepts, in characters of its JSON text (FilterCriteria.Filters[].Pattern).
MAX_PATTERN_CHARS: Final = 4096
#: Filters per mapping: Lambda allows 5 by default and 10 with a quota increase; eventd allows 10.
MAX_FILTERS: Final = 10
#: EventBridge refuses a pattern whose `$or` expansion yields more alternatives than this.
MAX_COMBINATIONS: Final = 1000
#: Nesting guard (eventd's own) so a hostile pattern cannot reach Python's recursion limit.
MAX_DEPTH: Final = 64
#: Largest magnitude of a `numeric` operand EventBridge accepts.
NUMERIC_LIMIT: Final = 5.0e9

_MISSING: Final = object()
_Test = Callable[[Any], bool]
_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "=": operator.eq, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
_KINDS: Final = {type(None): "null", bool: "boolean", str: "string", int: "number", float: "number",
                 list: "array", dict: "object"}
_OPERATORS: Final = "prefix, suffix, equals-ignore-case, wildcard, anything-but, numeric, exists"


class PatternError(ValueError):
    """A filter pattern that cannot be compiled; the message names the key path and the problem."""


class Filter:
    """Compiled filter criteria of one mapping: a record passes when any pattern matches."""

    __slots__ = ("_patterns", "fields")

    def __init__(self, patterns: tuple[_Object, ...] = ()) -> None:
        self._patterns = patterns
        #: Top-level keys any pattern reads: a source may skip parsing `body`/`data` when absent here.
        self.fields = frozenset(key for p in patterns for key in p.field_names())

    @property
    def is_empty(self) -> bool:
        """True when there are no patterns: every record passes and nothing needs parsing."""
        return not self._patterns

    def matches(self, event: dict[str, Any]) -> bool:
        """Whether the record, as the filter sees it, passes (any pattern matches; no patterns: always)."""
        for pattern in self._patterns:
            if pattern.match(event):
                return True
        return not self._patterns

    def __repr__(self) -> str:
        return f"<Filter patterns={len(self._patterns)} fields={sorted(self.fields)}>"


def compile_filters(patterns: list[dict[str, Any] | str]) -> Filter:
    """Validate and compile the patterns of one mapping (each a dict or its JSON text).

    Raises:
        PatternError: naming the filter (when there are several), the key path and what is wrong.
    """
    if not isinstance(patterns, list | tuple):
        raise PatternError(f"filters must be a list of patterns, got {_kind(patterns)}")
    if len(patterns) > MAX_FILTERS:
        raise PatternError(f"{len(patterns)} filters; a mapping allows at most {MAX_FILTERS}")
    compiled = []
    for index, pattern in enumerate(patterns, 1):
        try:
            compiled.append(_compile_pattern(pattern))
        except PatternError as exc:
            if len(patterns) == 1:
                raise
            raise PatternError(f"filter {index}: {exc}") from None
    return Filter(tuple(compiled))


# -- matchers: built once, called per record -------------------------------------------------------


def _key(value: Any) -> Any:
    """Exact-match identity: strings as is, other scalars tagged by type so 1, 1.0 and true differ."""
    return value if value is None or type(value) is str else (type(value), value)


def _flatten(values: list[Any], out: list[Any], objects: bool) -> list[Any]:
    """Flatten nested arrays, keeping only the objects or only the leaves."""
    for value in values:
        if isinstance(value, list):
            _flatten(value, out, objects)
        elif isinstance(value, dict) is objects:
            out.append(value)
    return out


@dataclass(frozen=True, slots=True)
class _Leaf:
    """One leaf array: exact values (one set lookup) and operator tests, ORed."""

    exact: frozenset[Any]
    tests: tuple[_Test, ...]
    if_absent: bool  # from `exists: false`
    if_present: bool  # from `exists: true`

    def __call__(self, value: Any) -> bool:
        if isinstance(value, list):
            values = _flatten(value, [], objects=False)
            if not values:
                return self.if_absent
            return self.if_present or any(self._one(v) for v in values)
        if value is _MISSING or isinstance(value, dict):
            return self.if_absent
        return self.if_present or self._one(value)

    def _one(self, value: Any) -> bool:
        # loops and the inlined _key() rather than any()/calls: this is the per-record inner loop
        if self.exact:
            try:
                if (value if value is None or type(value) is str else (type(value), value)) in self.exact:
                    return True
            except TypeError:  # an unhashable non-JSON value cannot equal any pattern value
                pass
        return any(test(value) for test in self.tests)


@dataclass(frozen=True, slots=True)
class _Object:
    """A pattern object: every field must match and, for each `$or`, one alternative."""

    fields: tuple[tuple[str, _Test], ...]
    ors: tuple[tuple[_Object, ...], ...]

    def field_names(self) -> set[str]:
        return {k for k, _ in self.fields} | {k for alts in self.ors for a in alts for k in a.field_names()}

    def match(self, obj: dict[str, Any]) -> bool:
        get = obj.get
        for key, test in self.fields:
            if not test(get(key, _MISSING)):
                return False
        for alternatives in self.ors:
            for alt in alternatives:
                if alt.match(obj):
                    break
            else:
                return False
        return True


@dataclass(frozen=True, slots=True)
class _Nested:
    """A field whose pattern is an object: the event value must be an object (or an array of them)."""

    obj: _Object
    if_absent: bool  # a missing object still lets `exists: false` leaves below it match

    def __call__(self, value: Any) -> bool:
        if isinstance(value, dict):
            return self.obj.match(value)
        if value is _MISSING:
            return self.if_absent
        if isinstance(value, list):
            if objects := _flatten(value, [], objects=True):
                return any(self.obj.match(item) for item in objects)
            return self.if_absent and not _flatten(value, [], objects=False)  # [] is absent, [1] is not
        return False


# -- compilation: every check happens here, once ---------------------------------------------------


def _fail(path: str, problem: str) -> PatternError:
    return PatternError(f"{path}: {problem}" if path else problem)


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def _is_nan(number: float) -> bool:
    return isinstance(number, float) and math.isnan(number)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _compile_pattern(pattern: dict[str, Any] | str) -> _Object:
    if isinstance(pattern, str):
        if len(pattern) > MAX_PATTERN_CHARS:
            raise _fail("", f"pattern is {len(pattern)} characters; the limit is {MAX_PATTERN_CHARS}")
        try:
            pattern = json.loads(pattern, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise _fail("", f"pattern is not valid JSON: {exc}") from None
    if not isinstance(pattern, dict):
        raise _fail("", f"pattern must be a JSON object, got {_kind(pattern)}")
    obj, combinations = _compile_object(pattern, "", 1)  # first, so a bad value is named precisely
    size = len(json.dumps(pattern, separators=(",", ":"), ensure_ascii=False))
    if size > MAX_PATTERN_CHARS:
        raise _fail("", f"pattern is {size} characters as JSON; the limit is {MAX_PATTERN_CHARS}")
    if combinations > MAX_COMBINATIONS:
        raise _fail("", f"$or expands to {combinations} combinations; the limit is {MAX_COMBINATIONS}")
    return obj


def _compile_object(pattern: dict[str, Any], path: str, depth: int) -> tuple[_Object, int]:
    """Returns the matcher and how many $or-free patterns it stands for."""
    if depth > MAX_DEPTH:
        raise _fail(path, f"nested deeper than {MAX_DEPTH} levels")
    if not pattern:
        raise _fail(path, "empty object; a pattern needs at least one field")
    fields: list[tuple[str, _Test]] = []
    ors: list[tuple[_Object, ...]] = []
    combinations = 1
    for key, value in pattern.items():
        if not isinstance(key, str):
            raise _fail(path, f"key {key!r} must be a string")
        where = f"{path}.{key}" if path else key
        if key == "$or":
            if not isinstance(value, list) or not value:
                raise _fail(where, "must be a non-empty array of pattern objects")
            alternatives, total = [], 0
            for i, alt in enumerate(value):
                if not isinstance(alt, dict):
                    raise _fail(f"{where}[{i}]", f"must be a pattern object, got {_kind(alt)}")
                compiled, count = _compile_object(alt, f"{where}[{i}]", depth + 1)
                alternatives.append(compiled)
                total += count
            ors.append(tuple(alternatives))
            combinations *= total
        elif isinstance(value, dict):
            compiled, count = _compile_object(value, where, depth + 1)
            fields.append((key, _Nested(compiled, compiled.match({}))))
            combinations *= count
        elif isinstance(value, list):
            fields.append((key, _compile_leaf(value, where)))
        else:
            raise _fail(where, f"must be an object of fields or an array of values, got {_kind(value)}")
    return _Object(tuple(fields), tuple(ors)), combinations


def _compile_leaf(values: list[Any], path: str) -> _Leaf:
    if not values:
        raise _fail(path, "empty array; list at least one value")
    exact: set[Any] = set()
    tests: list[_Test] = []
    if_absent = if_present = False
    for value in values:
        if not isinstance(value, dict):
            exact.add(_key(_scalar(value, path, "match value")))
            continue
        if len(value) != 1:
            raise _fail(path, f"an operator object holds exactly one operator, got {sorted(value)}")
        ((op, arg),) = value.items()
        if op != "exists":
            tests.append(_compile_operator(op, arg, path))
        elif not isinstance(arg, bool):
            raise _fail(path, f"exists expects true or false, got {_kind(arg)}")
        else:
            if_absent, if_present = if_absent or not arg, if_present or arg
    return _Leaf(frozenset(exact), tuple(tests), if_absent, if_present)


def _scalar(value: Any, path: str, what: str) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(path, f"{what} {value} is not a JSON number")
    if value is None or isinstance(value, str | int | float):
        return value
    raise _fail(path, f"{what} must be a string, number, true, false, null or an operator, got {_kind(value)}")


def _compile_operator(op: str, arg: Any, path: str) -> _Test:
    if op in ("prefix", "suffix") and isinstance(arg, dict):
        raise _fail(path, f"{op} with {', '.join(arg) or 'an object'} is not supported by Lambda filters")
    if op in ("prefix", "suffix", "equals-ignore-case", "wildcard") and not isinstance(arg, str):
        raise _fail(path, f"{op} expects a string, got {_kind(arg)}")
    if op == "prefix":
        return lambda v: type(v) is str and v.startswith(arg)
    if op == "suffix":
        return lambda v: type(v) is str and v.endswith(arg)
    if op == "equals-ignore-case":
        lowered = arg.lower()
        return lambda v: type(v) is str and v.lower() == lowered
    if op == "wildcard":
        fullmatch = _wildcard_regex(arg, path).fullmatch
        return lambda v: type(v) is str and fullmatch(v) is not None
    if op == "anything-but":
        return _anything_but(arg, path)
    if op == "numeric":
        return _numeric(arg, path)
    if op == "cidr":
        raise _fail(path, "cidr is an EventBridge operator that Lambda filters do not support")
    raise _fail(path, f"unknown operator {op!r} (expected one of {_OPERATORS})")


def _wildcard_regex(pattern: str, path: str) -> re.Pattern[str]:
    regex: list[str] = []
    star = False
    for token in re.split(r"(\\.?|\*)", pattern, flags=re.DOTALL):
        if token == "*":
            if star:  # EventBridge refuses runs of stars rather than collapsing them
                raise _fail(path, f"wildcard {pattern!r}: consecutive * are not allowed")
            regex.append(".*")
        elif token.startswith("\\"):
            if token not in ("\\*", "\\\\"):
                raise _fail(path, f"wildcard {pattern!r}: a backslash may only escape * or \\")
            regex.append(re.escape(token[1]))
        else:
            regex.append(re.escape(token))
        star = token == "*" or (star and not token)
    return re.compile("".join(regex), re.DOTALL)


def _anything_but(arg: Any, path: str) -> _Test:
    if isinstance(arg, dict):
        raise _fail(path, f"anything-but with {', '.join(arg) or '{}'} is not supported by Lambda filters")
    values = arg if isinstance(arg, list) else [arg]
    if not values:
        raise _fail(path, "anything-but expects a string, a number or a non-empty array of them")
    for value in values:
        if value is None or isinstance(value, bool | list | dict):
            raise _fail(path, f"anything-but values must be strings or numbers, got {_kind(value)}")
        _scalar(value, path, "anything-but value")
    excluded = frozenset(_key(v) for v in values)

    def test(value: Any) -> bool:
        try:
            return _key(value) not in excluded
        except TypeError:
            return True

    return test


def _numeric(arg: Any, path: str) -> _Test:
    shape = "numeric expects pairs of an operator and a number"
    if not isinstance(arg, list) or not arg or len(arg) % 2:
        raise _fail(path, shape)
    if len(arg) > 4:
        raise _fail(path, "numeric takes at most a lower and an upper bound")
    for op, number in zip(arg[::2], arg[1::2], strict=True):
        if not isinstance(op, str) or op not in _COMPARE:
            raise _fail(path, f"{shape}; unknown operator {op!r} (expected =, <, <=, >, >=)")
        if isinstance(number, bool) or not isinstance(number, int | float) or _is_nan(number):
            raise _fail(path, f"{shape}; {op} is followed by {_kind(number)}")
        if abs(number) > NUMERIC_LIMIT:
            raise _fail(path, f"numeric operand {number} is outside ±{NUMERIC_LIMIT:g}")
    if len(arg) == 2:
        compare, bound = _COMPARE[arg[0]], arg[1]
        return lambda v: type(v) in (int, float) and compare(v, bound)
    low_op, low, high_op, high = arg
    if low_op not in (">", ">=") or high_op not in ("<", "<="):
        raise _fail(path, "numeric range must be > or >= a bottom, then < or <= a top")
    if not low < high:
        raise _fail(path, f"numeric range bottom {low} must be less than top {high}")
    above, below = _COMPARE[low_op], _COMPARE[high_op]
    return lambda v: type(v) in (int, float) and above(v, low) and below(v, high)
