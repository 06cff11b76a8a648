"""Cron schedules exactly as a Kubernetes CronJob takes them.

The API server checks `spec.schedule` with robfig/cron v3's standard parser
(`cron.ParseStandard`, k8s.io/kubernetes pkg/apis/batch/validation) and, on
create, refuses any schedule containing `TZ` (the time zone is
`spec.timeZone`). This module implements that grammar from its description,
quirks included, so `validate` accepts what `deploy` will get through:

* a descriptor, exactly as written: @yearly @annually @monthly @weekly
  @daily @midnight @hourly, or `@every <Go duration>` (`@every 1h30m`);
* else five fields split on Unicode white space: minute 0-59, hour 0-23,
  day of month 1-31, month 1-12 or jan-dec, day of week 0-6 or sun-sat
  (names in any case; 7 is not Sunday). A field is a comma-separated list
  (empty items are skipped) of `*`, `?`, `N`, `N-M`, each optionally
  `/STEP`; `N/STEP` runs to the field's maximum. After `*` or `?` the rest
  of a range (`*-5`) is ignored. Numbers are Go integers (`+5` is 5).

Not part of it (croniter accepts them, the API server does not): `L`, `W`,
`#`, six fields (seconds or years), @reboot. A time zone is not written in
the schedule but beside it (`spec.timeZone`, the trigger's `timezone`),
checked as the API server checks it: `time_zone_problem`.
"""

from __future__ import annotations

import dataclasses
import re
import zoneinfo
from collections.abc import Mapping

__all__ = ["DESCRIPTORS", "go_duration", "schedule_problem", "time_zone_problem"]

DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_EVERY = "@every "

# Go's unicode.IsSpace: the Unicode White_Space property.
_FIELD_SEPARATOR = re.compile("[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
# strconv.Atoi: an optional sign and ASCII digits, within int64.
_GO_INT = re.compile(r"[+-]?[0-9]+")
_INT64_MAX = 2**63 - 1

_MONTHS = {name: number for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}  # fmt: skip
_DAYS = {name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: Mapping[str, int] | None = None

    @property
    def expected(self) -> str:
        names = f" or {min(self.names, key=self.names.get)}-{max(self.names, key=self.names.get)}" if self.names else ""
        return f"{self.low}-{self.high}{names}"


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 6, _DAYS),
)
_SHAPE = "5 fields (minute hour day-of-month month day-of-week) or a macro such as @daily"


class _Invalid(ValueError):
    pass


def schedule_problem(schedule: str) -> str | None:
    """None when the API server accepts `schedule` for a new CronJob, else what is wrong with it."""
    if "TZ" in schedule:
        return (f"Kubernetes refuses a time zone (TZ= or CRON_TZ=, any 'TZ') in a CronJob schedule, got {schedule!r}; "
                "give the trigger a timezone instead (e.g. timezone: Europe/Paris)")  # fmt: skip
    if schedule.startswith("@"):
        if schedule in DESCRIPTORS:
            return None
        if schedule.startswith(_EVERY):
            try:
                go_duration(schedule[len(_EVERY):])
            except _Invalid as exc:
                return (f"invalid cron schedule {schedule!r}: {exc} (expected @every and a duration such as "
                        "90s, 15m or 1h30m; units ns, us, ms, s, m, h)")  # fmt: skip
            return None
        return f"unknown cron macro {schedule!r} (Kubernetes CronJobs accept {', '.join(DESCRIPTORS)}, @every <duration>)"
    fields = [f for f in _FIELD_SEPARATOR.split(schedule) if f]
    if len(fields) != len(_FIELDS):
        return f"invalid cron schedule {schedule!r}: expected {_SHAPE}, got {len(fields)} field{'s' * (len(fields) != 1)}"
    for text, field in zip(fields, _FIELDS):
        try:
            _check_field(text, field)
        except _Invalid as exc:
            return f"invalid cron schedule {schedule!r}: {field.name} {text!r}: {exc}"
    return None


# Each part of a zone name, as the API server allows it (no digits-only POSIX TZ strings).
_ZONE_PART = re.compile(r"[A-Za-z.\-_0-9+]{1,14}")


def time_zone_problem(name: str) -> str | None:
    """None when the API server accepts `name` as a CronJob's spec.timeZone, else what is wrong with it."""
    expected = "expected an IANA time zone such as Europe/Paris or UTC"
    for part in name.split("/"):
        if part in (".", "..") or part.startswith("-") or not _ZONE_PART.fullmatch(part):
            return f"unknown time zone {name!r} ({expected})"
    if name.lower() == "local":
        return f"{name!r} is the controller's own time zone, not an explicit one ({expected})"
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return f"unknown time zone {name!r} ({expected})"
    return None


def _check_field(text: str, field: _Field) -> None:
    for expr in (item for item in text.split(",") if item):
        range_and_step = expr.split("/")
        low_and_high = range_and_step[0].split("-")
        if low_and_high[0] in ("*", "?"):
            start, end = field.low, field.high
        else:
            start = _value(low_and_high[0], field)
            if len(low_and_high) == 1:
                end = start
            elif len(low_and_high) == 2:
                end = _value(low_and_high[1], field)
            else:
                raise _Invalid(f"{expr!r} has more than one '-'")
        step = 1
        if len(range_and_step) == 2:
            step = _number(range_and_step[1], "step")
            if len(low_and_high) == 1:  # N/step means N-max/step
                end = field.high
        elif len(range_and_step) > 2:
            raise _Invalid(f"{expr!r} has more than one '/'")
        if start < field.low:
            raise _Invalid(f"{start} is below the minimum {field.low} (expected {field.expected})")
        if end > field.high:
            raise _Invalid(f"{end} is above the maximum {field.high} (expected {field.expected})")
        if start > end:
            raise _Invalid(f"range {expr!r} starts after it ends")
        if step == 0:
            raise _Invalid(f"step of {expr!r} must be positive")


def _value(text: str, field: _Field) -> int:
    if field.names:
        # Go's strings.ToLower maps one rune to one rune: U+0130 (İ) is plain i there.
        named = field.names.get(text.replace("\u0130", "i").lower())
        if named is not None:
            return named
    return _number(text, f"a number ({field.expected})")


def _number(text: str, what: str) -> int:
    if not _GO_INT.fullmatch(text) or not -_INT64_MAX - 1 <= int(text) <= _INT64_MAX:
        raise _Invalid(f"{text!r} is not {what}")
    number = int(text)
    if number < 0:
        raise _Invalid(f"{text!r} is negative")
    return number


_UNITS = {"ns": 1, "us": 1_000, "\u00b5s": 1_000, "\u03bcs": 1_000, "ms": 1_000_000,
          "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}  # fmt: skip
_DIGITS = frozenset("0123456789")


def go_duration(text: str) -> int:
    """Nanoseconds of a Go duration (time.ParseDuration: `1h30m`, `1.5h`, `-2m`, `300ms`, `0`)."""
    invalid = _Invalid(f"invalid duration {text!r}")
    s, negative, total = text, False, 0
    if s[:1] in ("-", "+"):
        negative, s = s[0] == "-", s[1:]
    if s == "0":
        return 0
    if not s:
        raise invalid
    while s:
        if not (s[0] == "." or s[0] in _DIGITS):
            raise invalid
        i = 0
        while i < len(s) and s[i] in _DIGITS:
            i += 1
        whole_digits, s = s[:i], s[i:]
        whole = int(whole_digits) if whole_digits else 0
        if whole > 2**63:
            raise invalid
        fraction, scale, fraction_digits = 0, 1.0, ""
        if s[:1] == ".":
            s = s[1:]
            i = 0
            while i < len(s) and s[i] in _DIGITS:
                i += 1
            fraction_digits, s = s[:i], s[i:]
            for digit in fraction_digits:  # precision stops before 2**63, as Go's leadingFraction
                if fraction > (2**63 - 1) // 10 or fraction * 10 + int(digit) > 2**63:
                    break
                fraction, scale = fraction * 10 + int(digit), scale * 10
        if not whole_digits and not fraction_digits:
            raise invalid
        i = 0
        while i < len(s) and not (s[i] == "." or s[i] in _DIGITS):
            i += 1
        if i == 0:
            raise _Invalid(f"missing unit in duration {text!r}")
        unit_name, s = s[:i], s[i:]
        unit = _UNITS.get(unit_name)
        if unit is None:
            raise _Invalid(f"unknown unit {unit_name!r} in duration {text!r}")
        if whole > 2**63 // unit:
            raise invalid
        value = whole * unit
        if fraction:
            value += int(float(fraction) * (float(unit) / scale))
            if value > 2**63:
                raise invalid
        total = (total + value) % 2**64  # Go adds in a uint64
        if total > 2**63:
            raise invalid
    if not negative and total > 2**63 - 1:
        raise invalid
    return -total if negative else total
