"""pytest_test: a py_test whose main is pytest, so test files stay plain pytest modules."""

load("@rules_python//python:defs.bzl", "py_test")

def pytest_test(name, srcs, deps = [], data = [], args = [], **kwargs):
    """Runs the given pytest files under `bazel test`.

    Args:
      name: target name, conventionally the test module's name.
      srcs: the *_test.py files.
      deps: libraries the tests import.
      data: runtime files (fixtures, example workflows).
      args: extra pytest arguments.
      **kwargs: passed to py_test (size, tags, timeout, ...).
    """
    main = name + "_main.py"

    # Each test gets its own copy of the shared main: py_test needs main in srcs.
    native.genrule(
        name = name + "_main",
        srcs = ["//tools/pytest:pytest_main.py"],
        outs = [main],
        cmd = "cp $< $@",
        visibility = ["//visibility:private"],
    )
    py_test(
        name = name,
        srcs = srcs + [main],
        main = main,
        deps = deps + [
            "//tools/pytest:pytest_main",
            "@pip//pytest",
            "@pip//pytest_asyncio",
            "@pip//pytest_timeout",
        ],
        data = data + ["//:pytest.ini"],
        args = args + ["$(location %s)" % src for src in srcs],
        **kwargs
    )
