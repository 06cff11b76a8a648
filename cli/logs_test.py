"""`logs --follow` streams text, so it refuses JSON output."""

from __future__ import annotations

from cli.main import main


def test_follow_and_json_do_not_mix(capsys):
    assert main(["logs", "wf", "--follow", "-o", "json"]) == 1
    assert "--follow streams text" in capsys.readouterr().err
