"""Applying the lock: once per process, never in this test process, layers switched off by name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engine import sandbox
from engine.sandbox import LayerStatus, LockReport, PermissionPolicy, lock


def test_disabled_layers_parsing():
    assert sandbox.disabled_layers({}) == (frozenset(), [])
    disabled, warnings = sandbox.disabled_layers({"PIPEDREAMER_SANDBOX_DISABLE": " Landlock, seccomp,audit ,,"})
    assert disabled == {"landlock", "seccomp", "audit_hook"} and warnings == []
    disabled, warnings = sandbox.disabled_layers({"PIPEDREAMER_SANDBOX_DISABLE": "landlok"})
    assert disabled == frozenset() and "unknown layer 'landlok'" in warnings[0]


def test_apply_policy_is_once_per_process(monkeypatch: pytest.MonkeyPatch):
    report = LockReport(PermissionPolicy(), (LayerStatus("seccomp", True, "ok"),), (), ())
    monkeypatch.setattr(lock, "_report", report)
    with pytest.raises(RuntimeError, match="already applied"):
        sandbox.apply_policy(PermissionPolicy())
    assert sandbox.current_report() is report


def test_the_lock_is_not_applied_in_this_test_process():
    assert sandbox.current_report() is None
    assert "Seccomp:\t0" in Path("/proc/self/status").read_text() or sys.platform != "linux"
