"""Runs pytest as a Bazel py_test main, honouring Bazel's test environment."""

from __future__ import annotations

import os
import sys

import pytest


def main() -> int:
    args = ["-p", "no:cacheprovider"]
    if os.environ.get("XML_OUTPUT_FILE"):
        args.append(f"--junitxml={os.environ['XML_OUTPUT_FILE']}")
    if os.environ.get("TESTBRIDGE_TEST_ONLY"):
        args += ["-k", os.environ["TESTBRIDGE_TEST_ONLY"]]
    args += sys.argv[1:]
    return pytest.main(args)


if __name__ == "__main__":
    sys.exit(main())
