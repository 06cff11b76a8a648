"""robfig/cron's standard grammar as Kubernetes applies it (tests/k8s_cron_test.py asks the real API server)."""

from __future__ import annotations

import pytest

from engine.cron import go_duration, schedule_problem, time_zone_problem


@pytest.mark.parametrize(
    "schedule",
    [
        "0 9 * * *",
        "*/5 0-6 1,15 * mon-fri",
        "0 0 * JAN-MAR SUN",
        "0 0 ? * ?",
        "5/15 * * * *",  # 5-59/15
        "*-5 * * * *",  # robfig ignores what follows * in a range
        "1,,2 * * * *",  # empty list items are skipped
        "+5 * * * *",  # a Go integer may carry a sign
        "0 0 31 2 *",  # never fires, still valid
        "0\t0  *\u00a0* *",  # any Unicode white space separates fields
        "@daily",
        "@every 1h30m",
        "@every 1.5h",
        "@every 0",
    ],
)
def test_schedules_the_api_server_takes(schedule):
    assert schedule_problem(schedule) is None


@pytest.mark.parametrize(
    "schedule,problem",
    [
        ("0 0 L * *", "day of month 'L': 'L' is not a number (1-31)"),
        ("0 0 1W * *", "day of month '1W': '1W' is not a number (1-31)"),
        ("0 0 * * 5#2", "day of week '5#2': '5#2' is not a number (0-6 or sun-sat)"),
        ("0 0 * * 7", "day of week '7': 7 is above the maximum 6 (expected 0-6 or sun-sat)"),
        ("0 0 0 * *", "day of month '0': 0 is below the minimum 1 (expected 1-31)"),
        ("0 0 * 13 *", "month '13': 13 is above the maximum 12 (expected 1-12 or jan-dec)"),
        ("0 0 * * mon-sun", "day of week 'mon-sun': range 'mon-sun' starts after it ends"),
        ("*/0 * * * *", "minute '*/0': step of '*/0' must be positive"),
        ("1-2-3 * * * *", "minute '1-2-3': '1-2-3' has more than one '-'"),
        ("1/2/3 * * * *", "minute '1/2/3': '1/2/3' has more than one '/'"),
        ("0 0 * * * *", "expected 5 fields (minute hour day-of-month month day-of-week) or a macro such as @daily, got 6 fields"),
        ("0 0 * *", "got 4 fields"),
        (" @daily", "got 1 field"),
        ("@daily ", "unknown cron macro '@daily '"),
        ("@reboot", "unknown cron macro '@reboot'"),
        ("@every 1d", "unknown unit 'd' in duration '1d'"),
        ("@every 90", "missing unit in duration '90'"),
        ("TZ=UTC 0 0 * * *", "Kubernetes refuses a time zone (TZ= or CRON_TZ=, any 'TZ') in a CronJob schedule"),
        ("CRON_TZ=Europe/Paris @daily", "Kubernetes refuses a time zone"),
    ],
)
def test_schedules_the_api_server_refuses_say_why(schedule, problem):
    found = schedule_problem(schedule)
    assert found is not None and problem in found, found


@pytest.mark.parametrize(
    "text,nanoseconds",
    [
        ("0", 0),
        ("-0", 0),
        ("1h30m", 5_400_000_000_000),
        ("1.5h", 5_400_000_000_000),
        (".5s", 500_000_000),
        ("1.s", 1_000_000_000),
        ("-2m", -120_000_000_000),
        ("1µs", 1_000),
        ("1μs", 1_000),
        ("9223372036854775807ns", 2**63 - 1),
        ("-9223372036854775808ns", -(2**63)),
    ],
)
def test_go_durations(text, nanoseconds):
    assert go_duration(text) == nanoseconds


@pytest.mark.parametrize("text", ["", "1", ".", ".s", "1h 30m", "1d", "9223372036854775808ns", "3000000h", "+-1s"])
def test_bad_go_durations(text):
    with pytest.raises(ValueError):
        go_duration(text)


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/Argentina/Buenos_Aires", "Etc/GMT+5"])
def test_time_zones_the_api_server_takes(zone):
    assert time_zone_problem(zone) is None


@pytest.mark.parametrize(
    "zone,problem",
    [
        ("Local", "'Local' is the controller's own time zone, not an explicit one"),
        ("Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("../etc/passwd", "unknown time zone '../etc/passwd'"),
        ("-Europe/Paris", "unknown time zone"),
        ("Europe/Paris/", "unknown time zone"),
        ("Antarctica/DumontDUrvilleX", "unknown time zone"),  # a part longer than 14 characters
    ],
)
def test_time_zones_the_api_server_refuses(zone, problem):
    found = time_zone_problem(zone)
    assert found is not None and problem in found, found
