"""The lock's report: JSON for /healthz?verbose, one summary line, degraded when a layer is off."""

from __future__ import annotations

import json

import pytest

from engine.sandbox import LayerStatus, LockReport, PermissionPolicy


def make_report(*active: bool) -> LockReport:
    names = ("landlock", "seccomp", "audit_hook")
    layers = tuple(
        LayerStatus(name, on, "ok" if on else "missing", abi=7 if name == "landlock" and on else None)
        for name, on in zip(names, active)
    )
    return LockReport(PermissionPolicy(allow_read=("/app",)), layers, ("/app",), ("/dev/null",), ("careful",))


def test_report_dict_is_json_and_keyed_by_layer():
    data = make_report(True, True, True).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["applied"] is True and data["degraded"] is False
    assert data["layers"]["landlock"] == {"active": True, "detail": "ok", "abi": 7}
    assert data["layers"]["seccomp"] == {"active": True, "detail": "ok"}
    assert data["policy"]["allow_net"] is None
    assert data["warnings"] == ["careful"]


def test_report_summary_and_degraded():
    report = make_report(False, True, True)
    assert report.degraded and report.to_dict()["layers"]["landlock"]["abi"] is None
    assert report.summary() == (
        "permission lock: landlock INACTIVE, seccomp active, audit_hook active; read=/app write=- net=denied run=denied"
    )
    assert make_report(True, True, True).summary().startswith("permission lock: landlock active (ABI 7), seccomp active")
    assert report.layer("seccomp").active and pytest.raises(KeyError, report.layer, "nope")
