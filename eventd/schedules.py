"""Schedule expressions for scheduled rules: EventBridge `cron(...)` / `rate(...)` and classic five-field cron.

Pure (no I/O, no clock): `parse_schedule` validates an expression once; `Schedule.next_after` computes the
next fire time by jumping year -> month -> day -> hour -> minute, so a rare schedule such as
`cron(0 0 29 2 ? *)` costs a few dozen steps, never a minute-by-minute walk. lambda-semantics.md §10.2/§10.3
rules where they speak; choices marked *eventd* fill the gaps.

- Cron fields match wall-clock time in the zone passed to `next_after`. *eventd* follows what EventBridge
  Scheduler documents for DST: a wall time inside a spring-forward gap does not exist and is skipped (AWS
  knowledge center "eventbridge-scheduler-adjust-dst": "your schedule invocation gets skipped"); a wall time
  that occurs twice in a fall-back overlap fires once, at its first occurrence (fold=0).
- `rate(N unit)`: N >= 1, unit singular exactly when N == 1 (§10.3). *eventd*: fires every N units of absolute
  time aligned to the UNIX epoch (rate(5 minutes) at :00, :05, ... UTC; rate(1 day) at 00:00 UTC), in any zone,
  so a restarted daemon keeps the same grid (EventBridge counts from the rule's creation instead).
- EventBridge cron: six fields, wildcards per field as in §10.3's table, exactly one of day-of-month /
  day-of-week is `?`, day-of-week 1 = SUN. `L` (dom: last day; dow alone: Saturday), `LW`, `nW`, `nL`, `n#k`.
  *eventd*: `L`, `LW`, `nW`, `nL` may appear in comma lists; a `#` item must stand alone (§10.3 allows one);
  `L-n` offsets are refused (not documented). `nW` never leaves its month (`1W` on a Saturday is Monday the
  3rd) and, like a plain `31`, does not fire in a month too short to have day n.
- *eventd*: ranges wrap in the cyclic fields (minutes, hours, month, day-of-week): `FRI-MON`, `22-2`, `NOV-FEB`;
  a reversed range in day-of-month or year is refused. `a/s` runs from a to the field's maximum.
- Five-field cron (`m h dom mon dow`, given bare): `, - * /` and names; dow 0-7 with 0 and 7 Sunday; `?` is
  read as `*`; no `L W #` and no year (searched 400 years ahead, a whole Gregorian cycle: a schedule that has
  not fired by then never will). When both day fields are restricted a day matching either fires (classic
  cron's OR); as in Vixie cron/cronie a day field whose text starts with `*` counts as unrestricted, so the
  two are ANDed then (`0 0 */2 * 1` = odd-numbered days that are Mondays).
"""

from __future__ import annotations

import calendar
import re
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["Schedule", "ScheduleError", "parse_schedule", "scheduled_event"]

EVENTBRIDGE_YEARS = (1970, 2199)
_FIVE_FIELD_HORIZON_YEARS = 400  # the Gregorian calendar (weekdays included) repeats every 400 years
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)
_MONTHS = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_EB_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
_UNIX_DAYS = {name: n - 1 for name, n in _EB_DAYS.items()}
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"rate\(\s*(\S+)\s+(\S+)\s*\)", re.IGNORECASE)
_CRON = re.compile(r"cron\((.*)\)", re.IGNORECASE | re.DOTALL)


class ScheduleError(ValueError):
    """An invalid schedule expression; the message names the part at fault."""


@dataclass(frozen=True)
class _Field:
    """How one cron field reads: its name in messages, bounds, names, wildcards and whether ranges wrap."""

    name: str
    lo: int
    hi: int
    expected: str
    names: dict[str, int] = field(default_factory=dict)
    step: bool = True  # is `/` allowed
    cyclic: bool = False


_MINUTES = _Field("minutes", 0, 59, "0-59", cyclic=True)
_HOURS = _Field("hours", 0, 23, "0-23", cyclic=True)
_DOM = _Field("day-of-month", 1, 31, "1-31")
_MONTH = _Field("month", 1, 12, "1-12 or JAN-DEC", _MONTHS, cyclic=True)
_EB_DOW = _Field("day-of-week", 1, 7, "1-7 or SUN-SAT", _EB_DAYS, step=False, cyclic=True)
_YEAR = _Field("year", *EVENTBRIDGE_YEARS, "1970-2199")
_UNIX_DOW = _Field("day-of-week", 0, 7, "0-7 or SUN-SAT", _UNIX_DAYS, cyclic=True)


@dataclass(frozen=True)
class _Days:
    """Day-of-month and day-of-week rules; weekdays are 0 = Sunday .. 6 = Saturday internally."""

    dom: frozenset[int] = frozenset(range(1, 32))
    dom_last: bool = False
    dom_last_weekday: bool = False
    dom_nearest: frozenset[int] = frozenset()
    dow: frozenset[int] = frozenset(range(7))
    dow_last: frozenset[int] = frozenset()
    dow_nth: tuple[int, int] | None = None  # (weekday, k): the k-th such weekday of the month
    union: bool = False  # five-field cron with both day fields restricted: either one suffices

    def in_month(self, year: int, month: int) -> list[int]:
        first, ndays = calendar.monthrange(year, month)  # first: Monday = 0

        def weekday(day: int) -> int:  # 0 = Sunday
            return (first + day) % 7

        by_dom = {d for d in self.dom if d <= ndays}
        if self.dom_last:
            by_dom.add(ndays)
        if self.dom_last_weekday:  # step back over a trailing Saturday/Sunday
            by_dom.add(ndays - {6: 1, 0: 2}.get(weekday(ndays), 0))
        for day in self.dom_nearest:
            if day > ndays:
                continue
            if weekday(day) == 6:  # Saturday: the Friday before, unless that leaves the month
                by_dom.add(day - 1 if day > 1 else day + 2)
            elif weekday(day) == 0:  # Sunday: the Monday after, unless that leaves the month
                by_dom.add(day + 1 if day < ndays else day - 2)
            else:
                by_dom.add(day)
        by_dow = {d for d in range(1, ndays + 1) if weekday(d) in self.dow}
        for wd in self.dow_last:
            by_dow.add(ndays - (weekday(ndays) - wd) % 7)
        if self.dow_nth is not None:
            wd, k = self.dow_nth
            day = 1 + (wd - weekday(1)) % 7 + 7 * (k - 1)
            if day <= ndays:
                by_dow.add(day)
        return sorted(by_dom | by_dow if self.union else by_dom & by_dow)


@dataclass(frozen=True)
class _Cron:
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: tuple[int, ...]
    years: tuple[int, ...] | None  # None: five-field cron, no year field
    days: _Days

    def next_wall(self, start: datetime) -> datetime | None:
        """The first matching naive wall-clock minute at or after `start` (a naive, whole minute)."""
        years: Sequence[int] = self.years if self.years is not None else range(
            start.year, min(start.year + _FIVE_FIELD_HORIZON_YEARS, datetime.max.year) + 1)
        # Each level starts from `start`'s own value only while every level above it still equals `start`.
        for year in _from(years, start.year):
            same_y = year == start.year
            for month in _from(self.months, start.month if same_y else 1):
                same_m = same_y and month == start.month
                for day in _from(self.days.in_month(year, month), start.day if same_m else 1):
                    same_d = same_m and day == start.day
                    for hour in _from(self.hours, start.hour if same_d else 0):
                        same_h = same_d and hour == start.hour
                        for minute in _from(self.minutes, start.minute if same_h else 0):
                            return datetime(year, month, day, hour, minute)
        return None


def _from(values: Sequence[int], lo: int) -> Sequence[int]:
    """The sorted `values` that are >= lo."""
    return values[bisect_left(values, lo):]


@dataclass(frozen=True)
class Schedule:
    """A validated schedule expression; `Schedule(text)` raises ScheduleError like `parse_schedule`."""

    expression: str
    _plan: _Cron | timedelta = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_plan", _compile(self.expression))

    def next_after(self, after: datetime, tz: ZoneInfo) -> datetime | None:
        """The first fire time strictly after `after` (aware), in `tz`; None when the schedule never fires again."""
        if after.tzinfo is None:
            raise ValueError("next_after needs a timezone-aware datetime")
        plan = self._plan
        if isinstance(plan, timedelta):
            return (_EPOCH + ((after - _EPOCH) // plan + 1) * plan).astimezone(tz)
        # Compare instants in UTC only: Python compares two datetimes sharing a tzinfo by wall time, fold ignored.
        after_utc = after.astimezone(UTC)
        wall = after.astimezone(tz).replace(second=0, microsecond=0, tzinfo=None, fold=0) + _MINUTE
        while True:
            found = plan.next_wall(wall)
            if found is None:
                return None
            fire_utc = found.replace(tzinfo=tz).astimezone(UTC)  # fold=0: first occurrence of an ambiguous time
            # A wall time in a spring-forward gap does not survive the round trip through UTC: skip it.
            # In a fall-back overlap `after` may be a second-occurrence instant later than this one: skip too.
            fire = fire_utc.astimezone(tz)
            if fire.replace(tzinfo=None) == found and fire_utc > after_utc:
                return fire
            wall = found + _MINUTE

    def fires_between(self, start: datetime, end: datetime, tz: ZoneInfo, limit: int) -> list[datetime]:
        """Fire times in (start, end], oldest first, at most `limit` of them."""
        fires: list[datetime] = []
        current, end_utc = start, end.astimezone(UTC)  # UTC: see next_after
        while len(fires) < limit:
            nxt = self.next_after(current, tz)
            if nxt is None or nxt.astimezone(UTC) > end_utc:
                break
            fires.append(nxt)
            current = nxt
        return fires


def parse_schedule(expression: str) -> Schedule:
    """Validate `cron(...)`, `rate(...)` or a bare five-field cron expression; raises ScheduleError."""
    if not isinstance(expression, str):
        raise ScheduleError(f"schedule expression must be a string, found {type(expression).__name__}")
    return Schedule(expression.strip())


def scheduled_event(rule_name: str, fire_time: datetime, event_id: str) -> dict[str, object]:
    """The event EventBridge sends a scheduled rule's target (§10.2), with eventd's fixed account and region."""
    if fire_time.tzinfo is None:
        raise ValueError("scheduled_event needs a timezone-aware fire_time")
    return {
        "version": "0",
        "id": event_id,
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": fire_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [f"arn:aws:events:us-east-1:000000000000:rule/{rule_name}"],
        "detail": {},
    }


# ---------------------------------------------------------------------------------------------- parsing


def _compile(expression: str) -> _Cron | timedelta:
    text = expression.strip()
    if not text:
        raise ScheduleError("empty schedule expression: expected cron(...), rate(...) or five-field cron")
    lowered = text.lower()
    if lowered.startswith("rate"):
        return _compile_rate(text)
    if lowered.startswith("cron"):
        match = _CRON.fullmatch(text)
        if match is None:
            raise ScheduleError(f"cron(...): expected 'cron(<6 fields>)', found {text!r}")
        return _compile_eventbridge(match.group(1).split())
    fields = text.split()
    if len(fields) != 5:
        hint = "; wrap six fields in cron(...)" if len(fields) == 6 else ""
        raise ScheduleError(f"expected cron(...), rate(...) or a five-field cron expression, found {len(fields)} "
                            f"field{'s' if len(fields) != 1 else ''} in {text!r}{hint}")
    return _compile_five_field(fields)


def _compile_rate(text: str) -> timedelta:
    match = _RATE.fullmatch(text)
    if match is None:
        raise ScheduleError(f"rate(...): expected 'rate(<value> <unit>)', found {text!r}")
    value_text, unit = match.groups()
    if not (value_text.isdigit() and value_text.isascii()):
        raise ScheduleError(f"rate(...) value: expected a positive integer, found {value_text!r}")
    value = int(value_text)
    if value < 1:
        raise ScheduleError(f"rate(...) value: must be at least 1, found {value_text!r}")
    singular = unit.removesuffix("s")
    if singular not in _RATE_UNITS:
        raise ScheduleError(f"rate(...) unit: expected minute(s), hour(s) or day(s), found {unit!r}")
    if value == 1 and unit != singular:
        raise ScheduleError(f"rate(...) unit: a value of 1 takes the singular {singular!r}, found {unit!r}")
    if value != 1 and unit == singular:
        raise ScheduleError(f"rate(...) unit: a value of {value} takes the plural {singular + 's'!r}, found {unit!r}")
    seconds = value * _RATE_UNITS[singular]
    if seconds > 3_000_000_000:  # keeps epoch arithmetic inside datetime's range
        raise ScheduleError(f"rate(...) value: {value} {unit} is too long")
    return timedelta(seconds=seconds)


def _compile_eventbridge(fields: list[str]) -> _Cron:
    p = "cron(...)"
    if len(fields) != 6:
        raise ScheduleError(f"{p}: expected 6 fields (minutes hours day-of-month month day-of-week year), "
                            f"found {len(fields)}")
    minute, hour, dom, month, dow, year = fields
    if dom == "?" and dow == "?":
        raise ScheduleError(f"{p} day-of-month/day-of-week: only one of them may be '?'")
    if dom != "?" and dow != "?":
        raise ScheduleError(f"{p} day-of-month/day-of-week: exactly one of them must be '?', "
                            f"found {dom!r} and {dow!r}")
    days = _eventbridge_dom(dom) if dom != "?" else _eventbridge_dow(dow)
    return _Cron(minutes=_sorted(_parse_list(minute, _MINUTES, p)), hours=_sorted(_parse_list(hour, _HOURS, p)),
                 months=_sorted(_parse_list(month, _MONTH, p)), years=_sorted(_parse_list(year, _YEAR, p)),
                 days=days)


def _eventbridge_dom(text: str) -> _Days:
    p, plain, nearest = "cron(...)", set[int](), set[int]()
    last = last_weekday = False
    for item in _items(text, _DOM, p):
        upper = item.upper()
        if upper == "L":
            last = True
        elif upper == "LW":
            last_weekday = True
        elif upper.startswith("L-"):
            raise ScheduleError(f"{p} day-of-month: 'L-n' offsets are not supported, found {item!r}")
        elif upper.endswith("W"):
            nearest.add(_value(item[:-1], _DOM, p))
        else:
            plain |= _expand(item, _DOM, p)
    return _Days(dom=frozenset(plain), dom_last=last, dom_last_weekday=last_weekday,
                 dom_nearest=frozenset(nearest))


def _eventbridge_dow(text: str) -> _Days:
    p, plain, last = "cron(...)", set[int](), set[int]()
    items = _items(text, _EB_DOW, p)
    if "#" in text:
        match = re.fullmatch(r"(\w+)#(\w+)", text)
        if len(items) != 1 or match is None:
            raise ScheduleError(f"{p} day-of-week: '#' takes one 'weekday#n' standing alone, found {text!r}")
        nth = match.group(2)
        if not nth.isdigit() or not 1 <= int(nth) <= 5:
            raise ScheduleError(f"{p} day-of-week: expected '#1'-'#5' after the weekday, found '#{nth}'")
        return _Days(dow=frozenset(), dow_nth=(_value(match.group(1), _EB_DOW, p) - 1, int(nth)))
    for item in items:
        upper = item.upper()
        if upper == "L":  # alone, `L` is the last day of the week: Saturday (7)
            plain.add(7)
        elif upper.endswith("L"):
            last.add(_value(item[:-1], _EB_DOW, p) - 1)
        else:
            plain |= _expand(item, _EB_DOW, p)
    return _Days(dow=frozenset(d - 1 for d in plain), dow_last=frozenset(last))


def _compile_five_field(fields: list[str]) -> _Cron:
    p = "five-field cron"
    minute, hour, dom, month, dow = (f if f != "?" else "*" for f in fields)
    restricted = not dom.startswith("*") and not dow.startswith("*")
    days = _Days(dom=frozenset(_parse_list(dom, _DOM, p)),
                 dow=frozenset(d % 7 for d in _parse_list(dow, _UNIX_DOW, p)), union=restricted)
    return _Cron(minutes=_sorted(_parse_list(minute, _MINUTES, p)), hours=_sorted(_parse_list(hour, _HOURS, p)),
                 months=_sorted(_parse_list(month, _MONTH, p)), years=None, days=days)


def _items(text: str, spec: _Field, p: str) -> list[str]:
    items = text.split(",")
    if any(not item for item in items):
        raise ScheduleError(f"{p} {spec.name}: empty item in list {text!r}")
    if "?" in text:
        raise ScheduleError(f"{p} {spec.name}: '?' must be the whole field, found {text!r}")
    return items


def _parse_list(text: str, spec: _Field, p: str) -> set[int]:
    values: set[int] = set()
    for item in _items(text, spec, p):
        values |= _expand(item, spec, p)
    return values


def _expand(item: str, spec: _Field, p: str) -> set[int]:
    """One list item: `*`, `n`, `a-b`, each optionally `/step`; `n/step` runs from n to the field's maximum."""
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not spec.step:
            raise ScheduleError(f"{p} {spec.name}: '/' is not allowed in this field, found {item!r}")
        if not (step_text.isdigit() and step_text.isascii()) or int(step_text) < 1:
            raise ScheduleError(f"{p} {spec.name}: expected a positive step after '/', found {item!r}")
        step = int(step_text)
    if base == "*":
        lo, hi = spec.lo, spec.hi
    elif "-" in base:
        first, _, last = base.partition("-")
        lo, hi = _value(first, spec, p), _value(last, spec, p)
    else:
        lo = _value(base, spec, p)
        hi = spec.hi if slash else lo
    if lo <= hi:
        return set(range(lo, hi + 1, step))
    if not spec.cyclic:
        raise ScheduleError(f"{p} {spec.name}: range start is after its end, found {item!r}")
    wrapped = [*range(lo, spec.hi + 1), *range(spec.lo, hi + 1)]  # FRI-MON: FRI SAT SUN MON
    return set(wrapped[::step])


def _value(token: str, spec: _Field, p: str) -> int:
    if token.isdigit() and token.isascii():
        value = int(token)
        if spec.lo <= value <= spec.hi:
            return value
    elif token.upper() in spec.names:
        return spec.names[token.upper()]
    raise ScheduleError(f"{p} {spec.name}: expected {spec.expected}, found {token!r}")


def _sorted(values: set[int]) -> tuple[int, ...]:
    return tuple(sorted(values))
