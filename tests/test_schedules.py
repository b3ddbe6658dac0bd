"""Schedule expressions (lambda-semantics.md §10.2/§10.3): a table of (expression, zone, start, next fire)
rows worked out by hand from the calendar, a table of invalid expressions, and properties checked against a
brute-force walk over every minute of short random windows."""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventd.schedules import Schedule, ScheduleError, parse_schedule, scheduled_event

NY = "America/New_York"  # 2026: spring forward Sun 03-08 02:00 EST -> 03:00 EDT; fall back Sun 11-01 02:00 EDT -> 01:00 EST
BER = "Europe/Berlin"  # 2026: spring forward Sun 03-29 02:00 CET -> 03:00 CEST; fall back Sun 10-25 03:00 CEST -> 02:00 CET

# (expression, zone, start, expected next fire or None). Calendar anchors: 2026-01-01 Thu, 2026-02-01 Sun,
# 2026-03-01 Sun, 2026-05-01 Fri, 2026-08-01 Sat, 2026-12-01 Tue.
NEXT_ROWS: list[tuple[str, str, str, str | None]] = [
    # §10.3's examples
    ("cron(15 10 * * ? *)", "UTC", "2026-01-01T00:00:00+00:00", "2026-01-01T10:15:00+00:00"),
    ("cron(15 10 * * ? *)", "UTC", "2026-01-01T10:15:00+00:00", "2026-01-02T10:15:00+00:00"),  # strictly after
    ("cron(0 18 ? * MON-FRI *)", "UTC", "2026-01-02T18:00:00+00:00", "2026-01-05T18:00:00+00:00"),  # Fri -> Mon
    ("cron(0 8 1 * ? *)", "UTC", "2026-01-15T00:00:00+00:00", "2026-02-01T08:00:00+00:00"),
    ("cron(0/10 * ? * MON-FRI *)", "UTC", "2026-01-02T23:55:00+00:00", "2026-01-05T00:00:00+00:00"),
    ("cron(0/5 8-17 ? * MON-FRI *)", "UTC", "2026-01-05T17:56:00+00:00", "2026-01-06T08:00:00+00:00"),
    ("cron(0 9 ? * 2#1 *)", "UTC", "2026-01-06T00:00:00+00:00", "2026-02-02T09:00:00+00:00"),  # 1st Monday
    # L: last day of month, leap years included
    ("cron(0 12 L * ? *)", "UTC", "2026-02-01T00:00:00+00:00", "2026-02-28T12:00:00+00:00"),
    ("cron(0 12 L * ? *)", "UTC", "2028-02-01T00:00:00+00:00", "2028-02-29T12:00:00+00:00"),
    ("cron(0 12 L * ? *)", "UTC", "2026-04-30T12:00:00+00:00", "2026-05-31T12:00:00+00:00"),
    # W: nearest weekday, never leaving the month
    ("cron(0 9 15W * ? *)", "UTC", "2026-08-01T00:00:00+00:00", "2026-08-14T09:00:00+00:00"),  # Sat 15 -> Fri
    ("cron(0 9 15W * ? *)", "UTC", "2026-03-01T00:00:00+00:00", "2026-03-16T09:00:00+00:00"),  # Sun 15 -> Mon
    ("cron(0 9 1W * ? *)", "UTC", "2026-07-15T00:00:00+00:00", "2026-08-03T09:00:00+00:00"),  # Sat 1st -> Mon 3rd
    ("cron(0 9 31W * ? *)", "UTC", "2026-05-01T00:00:00+00:00", "2026-05-29T09:00:00+00:00"),  # Sun 31 -> Fri 29
    ("cron(0 9 31W * ? *)", "UTC", "2026-06-01T00:00:00+00:00", "2026-07-31T09:00:00+00:00"),  # June has no 31st
    ("cron(0 9 LW * ? *)", "UTC", "2026-01-01T00:00:00+00:00", "2026-01-30T09:00:00+00:00"),  # Sat 31 -> Fri 30
    ("cron(0 9 LW * ? *)", "UTC", "2026-05-01T00:00:00+00:00", "2026-05-29T09:00:00+00:00"),  # Sun 31 -> Fri 29
    # day-of-week L and #
    ("cron(0 22 ? * 6L *)", "UTC", "2026-01-01T00:00:00+00:00", "2026-01-30T22:00:00+00:00"),  # last Friday
    ("cron(0 22 ? * FRIL *)", "UTC", "2026-01-30T22:00:00+00:00", "2026-02-27T22:00:00+00:00"),
    ("cron(0 0 ? * L *)", "UTC", "2026-01-01T00:00:00+00:00", "2026-01-03T00:00:00+00:00"),  # L alone: Saturday
    ("cron(0 10 ? * 6#3 *)", "UTC", "2026-03-01T00:00:00+00:00", "2026-03-20T10:00:00+00:00"),  # 3rd Friday
    ("cron(0 10 ? * 1#5 *)", "UTC", "2026-03-01T10:00:00+00:00", "2026-03-29T10:00:00+00:00"),  # 5th Sunday
    ("cron(0 10 ? * SUN#5 *)", "UTC", "2026-03-29T10:00:00+00:00", "2026-05-31T10:00:00+00:00"),  # April has 4
    # years
    ("cron(0 0 1 1 ? 2030-2032)", "UTC", "2026-06-01T00:00:00+00:00", "2030-01-01T00:00:00+00:00"),
    ("cron(0 0 1 1 ? 2030-2032)", "UTC", "2032-01-01T00:00:00+00:00", None),
    ("cron(0 0 1 1 ? 2028/2)", "UTC", "2028-01-01T00:00:00+00:00", "2030-01-01T00:00:00+00:00"),
    ("cron(0 0 29 2 ? 2197-2199)", "UTC", "2190-01-01T00:00:00+00:00", None),  # no leap year left in range
    ("cron(0 0 * * ? *)", "UTC", "2199-12-31T00:00:00+00:00", None),  # end of EventBridge's year range
    # steps
    ("cron(0/15 * * * ? *)", "UTC", "2026-01-01T10:07:30+00:00", "2026-01-01T10:15:00+00:00"),
    ("cron(10-50/20 * * * ? *)", "UTC", "2026-01-01T10:31:00+00:00", "2026-01-01T10:50:00+00:00"),
    ("cron(10-50/20 * * * ? *)", "UTC", "2026-01-01T10:50:00+00:00", "2026-01-01T11:10:00+00:00"),
    ("cron(*/5 * * * ? *)", "UTC", "2026-01-01T10:58:00+00:00", "2026-01-01T11:00:00+00:00"),
    ("cron(0 1/6 * * ? *)", "UTC", "2026-01-01T19:00:00+00:00", "2026-01-02T01:00:00+00:00"),  # 1 7 13 19
    # names, wrapping ranges
    ("cron(0 12 1 JAN,JUL ? *)", "UTC", "2026-02-01T00:00:00+00:00", "2026-07-01T12:00:00+00:00"),
    ("cron(0 12 ? DEC MON *)", "UTC", "2026-01-01T00:00:00+00:00", "2026-12-07T12:00:00+00:00"),
    ("cron(0 12 ? * FRI-MON *)", "UTC", "2026-01-06T12:00:00+00:00", "2026-01-09T12:00:00+00:00"),
    ("cron(0 12 ? * FRI-MON *)", "UTC", "2026-01-10T12:00:00+00:00", "2026-01-11T12:00:00+00:00"),
    ("cron(0 22-2 * * ? *)", "UTC", "2026-01-01T02:00:00+00:00", "2026-01-01T22:00:00+00:00"),
    ("cron(0 0 1 NOV-FEB ? *)", "UTC", "2026-02-01T00:00:00+00:00", "2026-11-01T00:00:00+00:00"),
    # end of year, leap days
    ("cron(59 23 31 12 ? *)", "UTC", "2026-12-31T23:59:00+00:00", "2027-12-31T23:59:00+00:00"),
    ("cron(0 0 * * ? *)", "UTC", "2026-12-31T23:59:59+00:00", "2027-01-01T00:00:00+00:00"),
    ("cron(0 0 29 2 ? *)", "UTC", "2024-02-29T00:00:00+00:00", "2028-02-29T00:00:00+00:00"),
    ("cron(0 0 29 2 ? *)", "UTC", "2097-01-01T00:00:00+00:00", "2104-02-29T00:00:00+00:00"),  # 2100 not leap
    # five-field cron
    ("*/5 * * * *", "UTC", "2026-01-01T10:58:00+00:00", "2026-01-01T11:00:00+00:00"),
    ("0 9 * * 1-5", "UTC", "2026-01-02T09:00:00+00:00", "2026-01-05T09:00:00+00:00"),
    ("0 9 * * 7", "UTC", "2026-01-01T00:00:00+00:00", "2026-01-04T09:00:00+00:00"),  # 7 = Sunday
    ("0 9 * * 0", "UTC", "2026-01-01T00:00:00+00:00", "2026-01-04T09:00:00+00:00"),  # 0 = Sunday
    ("0 0 13 * FRI", "UTC", "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"),  # 13th OR Friday
    ("0 0 13 * FRI", "UTC", "2026-01-09T00:00:00+00:00", "2026-01-13T00:00:00+00:00"),
    ("0 0 */2 * 1", "UTC", "2026-01-01T00:00:00+00:00", "2026-01-05T00:00:00+00:00"),  # `*`-led: odd AND Monday
    ("0 0 1 jan *", "UTC", "2026-06-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"),
    ("0 0 29 2 *", "UTC", "2097-01-01T00:00:00+00:00", "2104-02-29T00:00:00+00:00"),
    ("0 0 30 2 *", "UTC", "2026-01-01T00:00:00+00:00", None),  # never: one Gregorian cycle is searched
    # rate(): epoch-aligned absolute intervals, whatever the zone
    ("rate(1 minute)", "UTC", "2026-01-01T10:00:30+00:00", "2026-01-01T10:01:00+00:00"),
    ("rate(1 hour)", "UTC", "2026-01-01T10:00:00+00:00", "2026-01-01T11:00:00+00:00"),
    ("rate(2 hours)", NY, "2026-01-01T01:00:00+00:00", "2025-12-31T21:00:00-05:00"),  # 02:00 UTC
    ("rate(1 day)", NY, "2026-03-08T12:00:00-04:00", "2026-03-08T20:00:00-04:00"),  # 00:00 UTC
    ("rate(7 days)", "UTC", "2026-01-01T00:00:00+00:00", "2026-01-08T00:00:00+00:00"),  # Thursdays, like 1970-01-01
    ("rate(5 minutes)", BER, "2026-03-29T01:58:00+01:00", "2026-03-29T03:00:00+02:00"),  # 01:00 UTC
    # zone conversion: 09:00 Berlin (07:00 UTC) is already past at 07:30 UTC
    ("cron(0 9 * * ? *)", BER, "2026-06-01T07:30:00+00:00", "2026-06-02T09:00:00+02:00"),
    # DST, New York spring forward: 02:00-02:59 does not exist on 2026-03-08 and is skipped
    ("cron(30 2 * * ? *)", NY, "2026-03-08T00:00:00-05:00", "2026-03-09T02:30:00-04:00"),
    ("cron(30 2 ? * 1 *)", NY, "2026-03-07T00:00:00-05:00", "2026-03-15T02:30:00-04:00"),  # Sundays
    ("cron(0 3 * * ? *)", NY, "2026-03-08T00:00:00-05:00", "2026-03-08T03:00:00-04:00"),
    ("cron(0/30 * * * ? *)", NY, "2026-03-08T01:45:00-05:00", "2026-03-08T03:00:00-04:00"),
    ("cron(59 1 * * ? *)", NY, "2026-03-07T02:00:00-05:00", "2026-03-08T01:59:00-05:00"),
    ("30 2 * * *", NY, "2026-03-08T00:00:00-05:00", "2026-03-09T02:30:00-04:00"),
    # DST, New York fall back: 01:00-01:59 happens twice on 2026-11-01 and fires once, the first time
    ("cron(30 1 * * ? *)", NY, "2026-11-01T00:00:00-04:00", "2026-11-01T01:30:00-04:00"),
    ("cron(30 1 * * ? *)", NY, "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"),
    ("cron(0 * * * ? *)", NY, "2026-11-01T01:00:00-04:00", "2026-11-01T02:00:00-05:00"),
    ("cron(15 * * * ? *)", NY, "2026-11-01T01:20:00-05:00", "2026-11-01T02:15:00-05:00"),  # from 2nd 01:20
    # DST, Berlin
    ("cron(30 2 ? * SUN *)", BER, "2026-03-28T12:00:00+01:00", "2026-04-05T02:30:00+02:00"),
    ("cron(0 2 * * ? *)", BER, "2026-03-28T03:00:00+01:00", "2026-03-30T02:00:00+02:00"),
    ("cron(30 2 * * ? *)", BER, "2026-10-25T00:00:00+02:00", "2026-10-25T02:30:00+02:00"),
    ("cron(30 2 * * ? *)", BER, "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"),
    ("cron(0/20 2 * * ? *)", BER, "2026-10-25T02:40:00+02:00", "2026-10-26T02:00:00+01:00"),
]


@pytest.mark.parametrize(("expression", "zone", "start", "expected"), NEXT_ROWS)
def test_next_after_table(expression: str, zone: str, start: str, expected: str | None) -> None:
    tz = ZoneInfo(zone)
    got = parse_schedule(expression).next_after(datetime.fromisoformat(start), tz)
    if expected is None:
        assert got is None
        return
    want = datetime.fromisoformat(expected)
    assert got is not None
    assert got.tzinfo is tz
    # compare in UTC: aware datetimes in a fall-back overlap never compare equal across zones (PEP 495)
    assert (got.astimezone(UTC), got.utcoffset()) == (want.astimezone(UTC), want.utcoffset()), got.isoformat()


# (expression, fragment of the message)
INVALID_ROWS: list[tuple[str, str]] = [
    ("cron(0 12 * * ?)", "cron(...): expected 6 fields"),
    ("cron(0 12 * * ? * 1)", "expected 6 fields (minutes hours day-of-month month day-of-week year), found 7"),
    ("cron()", "found 0"),
    ("cron(0 12 1 * MON *)", "exactly one of them must be '?', found '1' and 'MON'"),
    ("cron(0 12 * * * *)", "exactly one of them must be '?'"),
    ("cron(0 12 ? * ? *)", "only one of them may be '?'"),
    ("cron(60 * * * ? *)", "cron(...) minutes: expected 0-59, found '60'"),
    ("cron(0 24 * * ? *)", "cron(...) hours: expected 0-23, found '24'"),
    ("cron(0 0 32 * ? *)", "cron(...) day-of-month: expected 1-31, found '32'"),
    ("cron(0 0 0 * ? *)", "day-of-month: expected 1-31, found '0'"),
    ("cron(0 0 * 13 ? *)", "cron(...) month: expected 1-12 or JAN-DEC, found '13'"),
    ("cron(0 0 ? FOO * *)", "month: expected 1-12 or JAN-DEC, found 'FOO'"),
    ("cron(0 0 ? * 9 *)", "cron(...) day-of-week: expected 1-7 or SUN-SAT, found '9'"),
    ("cron(0 0 ? * 0 *)", "day-of-week: expected 1-7 or SUN-SAT, found '0'"),
    ("cron(0 0 * * ? 1969)", "cron(...) year: expected 1970-2199, found '1969'"),
    ("cron(0 0 * * ? 2200)", "year: expected 1970-2199, found '2200'"),
    ("cron(0 0 ? * MON/2 *)", "day-of-week: '/' is not allowed"),
    ("cron(0 0 L-3 * ? *)", "'L-n' offsets are not supported"),
    ("cron(0 0 W * ? *)", "day-of-month: expected 1-31, found ''"),
    ("cron(0 0 ? * 2#1,3#2 *)", "day-of-week: '#' takes one"),
    ("cron(0 0 ? * 2#6 *)", "expected '#1'-'#5'"),
    ("cron(0 0 ? * 8#1 *)", "day-of-week: expected 1-7 or SUN-SAT, found '8'"),
    ("cron(0 0 1,? * ? *)", "'?' must be the whole field"),
    ("cron(0/0 * * * ? *)", "minutes: expected a positive step"),
    ("cron(0 0 20-10 * ? *)", "day-of-month: range start is after its end"),
    ("cron(0 0 * * ? 2030-2020)", "year: range start is after its end"),
    ("cron(0 0 1,,2 * ? *)", "empty item"),
    ("cron(0 0 1- * ? *)", "day-of-month: expected 1-31, found ''"),
    ("cron 0 0 * * ? *", "expected 'cron(<6 fields>)'"),
    ("rate(5 seconds)", "rate(...) unit: expected minute(s), hour(s) or day(s), found 'seconds'"),
    ("rate(1 minutes)", "a value of 1 takes the singular 'minute'"),
    ("rate(1 days)", "singular 'day'"),
    ("rate(5 minute)", "a value of 5 takes the plural 'minutes'"),
    ("rate(0 minutes)", "rate(...) value: must be at least 1"),
    ("rate(-1 minutes)", "rate(...) value: expected a positive integer, found '-1'"),
    ("rate(1.5 hours)", "expected a positive integer"),
    ("rate(5)", "expected 'rate(<value> <unit>)'"),
    ("rate(5 minutes", "expected 'rate(<value> <unit>)'"),
    ("", "empty schedule expression"),
    ("every day at noon", "found 4 fields"),
    ("banana", "found 1 field in 'banana'"),
    ("0 0 * * ? *", "wrap six fields in cron(...)"),
    ("* * * *", "found 4 fields"),
    ("0 0 * * 8", "five-field cron day-of-week: expected 0-7 or SUN-SAT, found '8'"),
    ("0 0 L * *", "five-field cron day-of-month: expected 1-31, found 'L'"),
    ("0 0 * * MON#2", "day-of-week: expected 0-7 or SUN-SAT, found 'MON#2'"),
    ("61 * * * *", "five-field cron minutes: expected 0-59, found '61'"),
]


@pytest.mark.parametrize(("expression", "fragment"), INVALID_ROWS)
def test_invalid_expressions(expression: str, fragment: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule(expression)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_schedule_is_a_value() -> None:
    assert parse_schedule("  cron(0 12 * * ? *) ") == Schedule("cron(0 12 * * ? *)")
    assert hash(parse_schedule("rate(1 day)")) == hash(Schedule("rate(1 day)"))
    assert repr(Schedule("rate(1 day)")) == "Schedule(expression='rate(1 day)')"
    with pytest.raises(ScheduleError):
        Schedule("cron(nope)")


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule("rate(1 minute)").next_after(datetime(2026, 1, 1), ZoneInfo("UTC"))
    with pytest.raises(ValueError, match="timezone-aware"):
        scheduled_event("r", datetime(2026, 1, 1), "id")


def test_fires_between_window_and_limit() -> None:
    utc = ZoneInfo("UTC")
    sched = parse_schedule("cron(0/15 * * * ? *)")
    start, end = datetime(2026, 1, 1, 10, tzinfo=UTC), datetime(2026, 1, 1, 11, tzinfo=UTC)
    # (start, end]: 10:00 excluded, 11:00 included
    assert [t.strftime("%H:%M") for t in sched.fires_between(start, end, utc, 100)] == \
        ["10:15", "10:30", "10:45", "11:00"]
    assert [t.strftime("%H:%M") for t in sched.fires_between(start, end, utc, 2)] == ["10:15", "10:30"]
    assert sched.fires_between(start, end, utc, 0) == []
    assert sched.fires_between(end, start, utc, 10) == []
    assert parse_schedule("cron(0 0 1 1 ? 2020)").fires_between(start, end + timedelta(days=9999), utc, 5) == []


def test_fires_between_across_fall_back_fires_each_wall_time_once() -> None:
    ny = ZoneInfo(NY)
    fires = parse_schedule("cron(0/30 * * * ? *)").fires_between(
        datetime(2026, 11, 1, 0, 45, tzinfo=ny), datetime(2026, 11, 1, 2, 45, tzinfo=ny), ny, 100)
    assert [f.isoformat() for f in fires] == [
        "2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00",  # the repeated 01:00-01:59 (EST) is skipped
        "2026-11-01T02:00:00-05:00", "2026-11-01T02:30:00-05:00"]


def test_after_in_the_repeated_hour_given_in_the_same_zone() -> None:
    """`after` at the second 01:30 (fold=1) in the schedule's own zone: the first-occurrence 01:31-01:59 are
    earlier instants, though Python compares same-tzinfo datetimes by wall time and would call them later."""
    ny = ZoneInfo(NY)
    after = datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=ny)
    every_minute = parse_schedule("cron(* * * * ? *)").next_after(after, ny)
    daily = parse_schedule("cron(45 1 * * ? *)").next_after(after, ny)
    assert every_minute is not None and every_minute.isoformat() == "2026-11-01T02:00:00-05:00"
    assert daily is not None and daily.isoformat() == "2026-11-02T01:45:00-05:00"


def test_rare_schedules_are_fast() -> None:
    began = time.perf_counter()
    leap_days = parse_schedule("cron(0 0 29 2 ? *)").fires_between(
        datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC), ZoneInfo(NY), 1000)
    never = parse_schedule("cron(0 0 31 2 ? *)").next_after(datetime(1970, 1, 1, tzinfo=UTC), ZoneInfo(NY))
    assert time.perf_counter() - began < 1.0  # minute-by-minute iteration would take hours
    assert len(leap_days) == 56 and never is None  # 1972..2196 every 4 years, minus 2100
    assert all(d.month == 2 and d.day == 29 for d in leap_days)


def _nearest_weekday(year: int, month: int, day: int) -> int | None:
    """The weekday (Mon-Fri) of the month closest to `day`, by plain distance; None when the month is too short."""
    ndays = calendar.monthrange(year, month)[1]
    if day > ndays:
        return None
    weekdays = [d for d in range(1, ndays + 1) if calendar.weekday(year, month, d) < 5]
    return min(weekdays, key=lambda d: abs(d - day))


@pytest.mark.parametrize(("expression", "expected_day"), [
    ("cron(0 0 L * ? *)", lambda y, m: calendar.monthrange(y, m)[1]),
    ("cron(0 0 LW * ? *)", lambda y, m: _nearest_weekday(y, m, calendar.monthrange(y, m)[1])),
    ("cron(0 0 1W * ? *)", lambda y, m: _nearest_weekday(y, m, 1)),
    ("cron(0 0 15W * ? *)", lambda y, m: _nearest_weekday(y, m, 15)),
    ("cron(0 0 31W * ? *)", lambda y, m: _nearest_weekday(y, m, 31)),
    ("cron(0 0 ? * 6L *)", lambda y, m: max(d for d in range(1, 32) if d <= calendar.monthrange(y, m)[1]
                                             and calendar.weekday(y, m, d) == calendar.FRIDAY)),
    ("cron(0 0 ? * 3#2 *)", lambda y, m: [d for d in range(1, 15) if calendar.weekday(y, m, d) == calendar.TUESDAY][1]),
    ("cron(0 0 ? * 5#5 *)", lambda y, m: next(iter([d for d in range(1, calendar.monthrange(y, m)[1] + 1)
                                                    if calendar.weekday(y, m, d) == calendar.THURSDAY][4:]), None)),
])
def test_special_day_rules_against_their_definition(expression: str, expected_day: object) -> None:
    """Every month of 2000-2040 against a plain definition of L, LW, W, nL, #."""
    utc = ZoneInfo("UTC")
    fires = parse_schedule(expression).fires_between(
        datetime(1999, 12, 31, tzinfo=UTC), datetime(2040, 12, 31, tzinfo=UTC), utc, 10_000)
    want = [datetime(y, m, d, tzinfo=utc) for y in range(2000, 2041) for m in range(1, 13)
            if (d := expected_day(y, m)) is not None]  # type: ignore[operator]
    assert fires == want


def test_scheduled_event_shape() -> None:
    fire = datetime(2019, 3, 1, 2, 23, 45, 999_000, tzinfo=ZoneInfo("Europe/Berlin"))
    assert scheduled_event("my-schedule", fire, "cdc73f9d-aea9-11e3-9d5a-835b769c0d9c") == {
        "version": "0", "id": "cdc73f9d-aea9-11e3-9d5a-835b769c0d9c", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "000000000000", "time": "2019-03-01T01:23:45Z",
        "region": "us-east-1", "resources": ["arn:aws:events:us-east-1:000000000000:rule/my-schedule"],
        "detail": {}}


# ------------------------------------------------------------------------------------- properties

ZONES = ["UTC", NY, BER, "Australia/Lord_Howe", "Asia/Kolkata"]  # Lord Howe shifts by 30 minutes
# Instants near DST transitions (and a few ordinary days) to start windows from.
ANCHORS = [datetime.fromisoformat(s) for s in (
    "2026-03-08T06:00:00+00:00", "2026-11-01T05:00:00+00:00", "2026-03-29T00:30:00+00:00",
    "2026-10-25T00:30:00+00:00", "2026-04-04T14:30:00+00:00", "2026-10-03T15:30:00+00:00",
    "2024-02-28T12:00:00+00:00", "2026-12-31T12:00:00+00:00", "2026-06-15T00:00:00+00:00")]


@st.composite
def simple_cron(draw: st.DrawFn) -> tuple[str, dict[str, set[int]], bool]:
    """A random cron expression plus the sets a brute-force matcher needs (weekday 0 = Sunday)."""
    def pick(lo: int, hi: int, star_step: int) -> tuple[str, set[int]]:
        kind = draw(st.sampled_from(["star", "step", "list", "range"] if star_step else ["star", "list", "range"]))
        if kind == "star":
            return "*", set(range(lo, hi + 1))
        if kind == "step":
            step = draw(st.integers(1, star_step))
            return f"*/{step}", set(range(lo, hi + 1, step))
        if kind == "range":
            a, b = sorted(draw(st.lists(st.integers(lo, hi), min_size=2, max_size=2)))
            return f"{a}-{b}", set(range(a, b + 1))
        values = draw(st.sets(st.integers(lo, hi), min_size=1, max_size=4))
        return ",".join(map(str, sorted(values))), values

    minute, minutes = pick(0, 59, 30)
    hour, hours = pick(0, 23, 12)
    month, months = pick(1, 12, 6)
    five_field = draw(st.booleans())
    if five_field:
        dom, doms = pick(1, 31, 10)
        dow, dows = pick(0, 6, 3)
        union = not dom.startswith("*") and not dow.startswith("*")
        sets = {"minute": minutes, "hour": hours, "dom": doms, "month": months, "dow": dows}
        return f"{minute} {hour} {dom} {month} {dow}", sets, union
    if draw(st.booleans()):
        dom, doms = pick(1, 31, 10)
        dow, dows = "?", set(range(7))
    else:
        dow, dows = pick(1, 7, 0)  # no `/` in EventBridge's day-of-week
        dows = {d - 1 for d in dows}
        dom, doms = "?", set(range(1, 32))
    sets = {"minute": minutes, "hour": hours, "dom": doms, "month": months, "dow": dows}
    return f"cron({minute} {hour} {dom} {month} {dow} *)", sets, False


def utc(times: list[datetime]) -> list[datetime]:
    """Instants to compare: datetimes sharing a tzinfo compare by wall time, blind to a DST overlap's fold."""
    return [t.astimezone(UTC) for t in times]


def brute_force(start: datetime, end: datetime, tz: ZoneInfo, matches: object) -> list[datetime]:
    """Every whole minute in (start, end] whose wall time matches, skipping second occurrences (fold=1)."""
    out: list[datetime] = []
    t = start.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    while t <= end:
        local = t.astimezone(tz)
        if local.fold == 0 and matches(local):  # type: ignore[operator]
            out.append(local)
        t += timedelta(minutes=1)
    return out


windows = st.tuples(st.sampled_from(ANCHORS), st.integers(-86_400, 86_400), st.integers(1, 3 * 1440))


@settings(max_examples=150, deadline=None)
@given(simple_cron(), st.sampled_from(ZONES), windows)
def test_cron_matches_brute_force(case: tuple[str, dict[str, set[int]], bool], zone: str,
                                  window: tuple[datetime, int, int]) -> None:
    expression, sets, union = case
    tz = ZoneInfo(zone)
    anchor, offset_s, minutes = window
    start = anchor + timedelta(seconds=offset_s)
    end = start + timedelta(minutes=minutes)

    def matches(t: datetime) -> bool:
        by_dom, by_dow = t.day in sets["dom"], (t.weekday() + 1) % 7 in sets["dow"]
        day_ok = (by_dom or by_dow) if union else (by_dom and by_dow)
        return t.minute in sets["minute"] and t.hour in sets["hour"] and t.month in sets["month"] and day_ok

    sched = parse_schedule(expression)
    got = sched.fires_between(start, end, tz, 10_000)
    assert utc(got) == utc(brute_force(start, end, tz, matches))
    previous = start
    for fire in got:  # each step is strictly later, and is what next_after returns from the step before
        nxt = sched.next_after(previous, tz)
        assert nxt is not None and utc([previous]) < utc([fire]) == utc([nxt])
        previous = fire


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([(1, "minute"), (2, "minutes"), (7, "minutes"), (15, "minutes"), (1, "hour"),
                        (3, "hours"), (1, "day")]),
       st.sampled_from(ZONES), windows)
def test_rate_matches_brute_force(rate: tuple[int, str], zone: str, window: tuple[datetime, int, int]) -> None:
    value, unit = rate
    period_min = value * {"minute": 1, "hour": 60, "day": 1440}[unit.removesuffix("s")]
    tz = ZoneInfo(zone)
    anchor, offset_s, minutes = window
    start = anchor + timedelta(seconds=offset_s)
    end = start + timedelta(minutes=minutes)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)

    def on_grid(t: datetime) -> bool:
        return (t - epoch) // timedelta(minutes=1) % period_min == 0

    got = parse_schedule(f"rate({value} {unit})").fires_between(start, end, tz, 10_000)
    # rate() ignores wall time entirely: second occurrences of an hour count too
    want = [t.astimezone(tz) for t in (start.replace(second=0, microsecond=0) + timedelta(minutes=i)
                                       for i in range(1, minutes + 2)) if start < t <= end and on_grid(t)]
    assert utc(got) == utc(want)
    assert all(g.tzinfo is tz for g in got)


@settings(max_examples=200, deadline=None)
@given(simple_cron(), st.sampled_from(ZONES),
       st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2150, 1, 1), timezones=st.just(UTC)))
def test_next_after_is_strictly_later(case: tuple[str, dict[str, set[int]], bool], zone: str,
                                      after: datetime) -> None:
    tz = ZoneInfo(zone)
    got = parse_schedule(case[0]).next_after(after, tz)
    assert got is None or (got.astimezone(UTC) > after and got.second == 0 and got.microsecond == 0 and got.fold == 0)
