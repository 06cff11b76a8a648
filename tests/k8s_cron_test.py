"""`validate` and a real kube-apiserver agree on cron schedules: each accepts exactly what the other does.

Every schedule (and time zone) of the tables goes through the spec parser
(what `validate` and `deploy` run) and, in our rendered CronJob, through the
API server's own validation (a server-side dry-run create with the
kubernetes client). Any value one accepts and the other refuses is a failure.
"""

from __future__ import annotations

import copy
import json

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from builder.manifests import ManifestOptions, render_cronjobs
from cli.main import main
from engine.spec import SpecError, parse_spec

SCHEDULES = [
    # Plain fields, ranges, lists, steps.
    "* * * * *", "0 9 * * *", "0 9 * * 1-5", "*/5 0-6 1,15 * *", "0 0 1,15 * *", "5/15 * * * *",
    "0-59/10 * * * *", "*/60 * * * *", "*/100 * * * *", "0 */25 * * *", "0 0 31 2 *",
    # Names, in any case; Go's lower-casing of U+0130.
    "0 9 * * mon-fri", "0 9 * * MON-FRI", "0 9 * * Mon", "0 0 * JAN-MAR *", "0 0 * jan,jul *", "0 9 * * monday",
    "0 0 * dec-jan *", "0 0 * * FR\u0130", "0 0 * * sun-sat", "0 0 * * sat-sun",
    # `?`, and what robfig makes of `*` with more after it, empty list items, signs.
    "0 0 ? * ?", "? ? ? ? ?", "?/5 * * * *", "*-5 * * * *", "*-1-2 * * * *", ", * * * *", "1,,2 * * * *",
    "+5 * * * *", "05 * * * *", "0x5 * * * *", "1_0 * * * *", "\u0663 * * * *", "-5 * * * *", "5- * * * *",
    "*/ * * * *", "/5 * * * *", "*/+5 * * * *", "*/-1 * * * *",
    # Out of range, backwards, zero steps, too many separators.
    "60 * * * *", "0 24 * * *", "0 0 0 * *", "0 0 32 * *", "0 0 * 0 *", "0 0 * 13 *", "0 0 * * 7",
    "1-60 * * * *", "30-10 * * * *", "*/0 * * * *", "0/0 * * * *", "1-2-3 * * * *", "1/2/3 * * * *",
    "9223372036854775808 * * * *",
    # croniter's extensions.
    "0 0 L * *", "0 0 1W * *", "0 0 LW * *", "0 0 * * 5#2", "0 0 * * 5L", "0 0 * * L",
    # Field counts and white space.
    "0 0 * * * *", "0 0 0 * * *", "0 0 * * * 2024", "* * * *", "*", "0  9 * * *", " 0 9 * * *", "0 9 * * * ",
    "0\t9\t*\t*\t*", "0\u00a09 * * *", "0\u20029 * * *", "0\u200b9 * * *", "0\x1c9 * * *",
    # Macros.
    "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly", "@reboot", "@Daily",
    "@daily ", " @daily", "@fortnightly", "@", "@every", "@every ",
    "@every 1h30m", "@every 1.5h", "@every .5h", "@every 1.h", "@every 0", "@every -5m", "@every +5m",
    "@every 1µs", "@every 500ms", "@every 1", "@every 1d", "@every 1h 30m", "@every  1h", "@every 1h ",
    "@every 9223372036854775807ns", "@every 9223372036854775808ns", "@every 3000000h",
    # Time zones.
    "TZ=UTC 0 0 * * *", "CRON_TZ=UTC 0 0 * * *", "TZ=Europe/Paris @daily", "CRON_TZ=UTC", "tz=UTC 0 0 * * *",
]  # fmt: skip

# The trigger's `timezone`, the CronJob's spec.timeZone.
TIME_ZONES = [
    "UTC", "Europe/Paris", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "Asia/Kolkata", "EST5EDT", "US/Pacific",
    "Local", "local", "Mars/Olympus", "europe/paris", "Europe", "Europe/Paris/", "Europe//Paris", "/Europe/Paris",
    "../etc/passwd", "-Europe/Paris", "Europe/-Paris", "Etc/GMT+5 ", " UTC", "Europe/Pa ris",
    "America/Indiana/Indianapolis", "Antarctica/DumontDUrville", "zone.tab", "UTC+1", "GMT0",
]  # fmt: skip


def spec_text(schedule: str, timezone: str | None = None) -> str:
    trigger = {"type": "cron", "schedule": schedule, **({"timezone": timezone} if timezone is not None else {})}
    return yaml.safe_dump({
        "name": "cron-check", "version": "1.0.0", "nodes": {"a": {"path": "nodes/a.py"}}, "triggers": [trigger],
    })  # fmt: skip


def validate_problem(schedule: str, timezone: str | None = None) -> str | None:
    try:
        parse_spec(spec_text(schedule, timezone))
    except SpecError as exc:
        return str(exc)
    return None


def disagreements(kube, ns, cases: list[tuple[str, str | None]]) -> tuple[list[str], int, int]:
    """(what validate and the API server disagree on, how many the server accepted, refused)."""
    batch = client.BatchV1Api(config.new_client_from_config(config_file=kube.kubeconfig))
    (cronjob,) = render_cronjobs(parse_spec(spec_text("@daily")).spec, ManifestOptions(namespace=ns, image="r/cron-check:1.0.0"))
    found, accepted, refused = [], 0, 0
    for schedule, timezone in cases:
        body = copy.deepcopy(cronjob)
        body["spec"]["schedule"] = schedule
        if timezone is not None:
            body["spec"]["timeZone"] = timezone
        try:
            batch.create_namespaced_cron_job(ns, body, dry_run="All")
            server = None
        except ApiException as exc:
            assert exc.status == 422, (schedule, timezone, exc.status, exc.body)
            server = json.loads(exc.body)["message"]
        ours = validate_problem(schedule, timezone)
        if (ours is None) != (server is None):
            found.append(f"{schedule!r} {timezone!r}: validate: {ours or 'accepted'}; API server: {server or 'accepted'}")
        accepted += server is None
        refused += server is not None
    return found, accepted, refused


def test_validate_accepts_exactly_the_schedules_the_api_server_accepts(kube, ns):
    found, accepted, refused = disagreements(kube, ns, [(schedule, None) for schedule in SCHEDULES])
    assert not found, "\n".join(found)
    assert accepted > 30 and refused > 30  # the table tries both sides


def test_validate_accepts_exactly_the_time_zones_the_api_server_accepts(kube, ns):
    found, accepted, refused = disagreements(kube, ns, [("0 9 * * *", zone) for zone in TIME_ZONES])
    assert not found, "\n".join(found)
    assert accepted > 5 and refused > 10


def test_validate_names_the_schedule_kubernetes_would_refuse(tmp_path, capsys):
    (tmp_path / "nodes").mkdir()
    (tmp_path / "nodes" / "a.py").write_text("async def run(ctx, input):\n    return input\n")
    (tmp_path / "workflow.yaml").write_text(spec_text("0 0 L * *"))
    assert main(["validate", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {tmp_path}/workflow.yaml:6: triggers[0].schedule: invalid cron schedule '0 0 L * *': "
        "day of month 'L': 'L' is not a number (1-31)"
    ]
