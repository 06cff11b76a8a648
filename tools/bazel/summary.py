#!/usr/bin/env python3
"""Counts the test results of a `bazel test` log: one closing line, `bazel test: N passed, N failed`."""

from __future__ import annotations

import re
import sys

# `//pkg:name    PASSED in 1.2s`, `//pkg:name   (cached) PASSED in 0.4s`, `... NO STATUS`
_RESULT = re.compile(r"^(//\S+|@\S+)\s+(?:\(cached\)\s+)?(PASSED|FLAKY|FAILED TO BUILD|FAILED|TIMEOUT|INCOMPLETE|NO STATUS|SKIPPED)\b")


def count(lines: list[str]) -> tuple[int, int]:
    results: dict[str, str] = {}
    for line in lines:
        match = _RESULT.match(line.strip())
        if match:
            results[match.group(1)] = match.group(2)
    passed = sum(1 for status in results.values() if status in ("PASSED", "FLAKY"))
    skipped = sum(1 for status in results.values() if status == "SKIPPED")
    return passed, len(results) - passed - skipped


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: summary.py BAZEL_TEST_LOG", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8", errors="replace") as log:
        passed, failed = count(log.read().splitlines())
    print(f"bazel test: {passed} passed, {failed} failed")
    return 0 if passed and not failed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
