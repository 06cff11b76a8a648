"""What `cluster check` asks RBAC about, and how a report adds up."""

from __future__ import annotations

from k8s.preflight import FAILED, OK, REQUIRED_ACCESS, WARNING, CheckResult, PreflightReport


def test_required_access_covers_every_operation():
    granted = {str(a) for a in REQUIRED_ACCESS}
    for resource in ("deployments.apps", "services", "secrets", "cronjobs.batch", "networkpolicies.networking.k8s.io",
                     "ingresses.networking.k8s.io"):
        for verb in ("get", "list", "create", "patch", "delete"):
            assert f"{verb} {resource}" in granted
    assert "create services/proxy" in granted
    assert "get pods/log" in granted
    assert "list pods" in granted
    assert "list events" in granted


def test_report_passes_with_warnings_and_fails_on_failure():
    ok = PreflightReport("s", "ns", (CheckResult("api", OK, "up"), CheckResult("runtimeclass", WARNING, "missing")))
    assert ok.passed
    bad = PreflightReport("s", "ns", ok.checks + (CheckResult("rbac", FAILED, "denied"),))
    assert not bad.passed
    assert bad.to_dict()["checks"][2] == {"name": "rbac", "status": "failed", "message": "denied", "remediation": ""}
