"""The closing line of .ci/run's Bazel step counts what `bazel test` reported."""

from __future__ import annotations

from tools.bazel import summary

LOG = """\
INFO: Found 80 test targets...
//builder:layers_test                                           PASSED in 3.1s
//cli:main_test                                        (cached) PASSED in 2.0s
//examples/hello:check                                                  FAILED in 1.2s
//tests:image_run_test                                       NO STATUS
//tests:serve_http_test                                               TIMEOUT in 300.0s
//engine:executor_test                                           FLAKY, failed in 1 out of 2 in 4.0s

Executed 5 out of 6 tests: 3 tests pass and 3 fail locally.
"""


def test_counts_passed_and_failed_targets():
    assert summary.count(LOG.splitlines()) == (3, 3)


def test_prints_one_plain_closing_line(tmp_path, capsys):
    log = tmp_path / "bazel.log"
    log.write_text(LOG)
    assert summary.main([str(log)]) == 1
    assert capsys.readouterr().out == "bazel test: 3 passed, 3 failed\n"


def test_a_log_without_results_is_a_failure(tmp_path, capsys):
    log = tmp_path / "bazel.log"
    log.write_text("ERROR: Skipping '//...': no targets\n")
    assert summary.main([str(log)]) == 1
    assert capsys.readouterr().out == "bazel test: 0 passed, 0 failed\n"
