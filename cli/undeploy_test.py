"""`undeploy` refuses to delete without a confirmation it can get."""

from __future__ import annotations

import io

from cli.main import main


def test_refuses_without_terminal_and_without_yes(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    # No kubeconfig at all: the refusal comes before any cluster is contacted.
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    assert main(["undeploy", "wf"]) == 1
    err = capsys.readouterr().err
    assert "refusing to undeploy without confirmation: stdin is not a terminal; pass --yes" in err
