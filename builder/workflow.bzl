"""pipedreamer_workflow: the Bazel targets of one workflow project."""

load("@rules_python//python:defs.bzl", "py_test")

def pipedreamer_workflow(name, spec, srcs, fixtures = [], visibility = None, **kwargs):
    """Declares a workflow's targets.

    :files      the spec, node sources and fixtures
    :check      bazel test: `pipedreamer validate` then `pipedreamer test`

    Args:
      name: the workflow name (as in workflow.yaml).
      spec: the workflow.yaml file.
      srcs: the node sources (nodes/**/*.py).
      fixtures: tests/fixtures/*.json.
      visibility: visibility of the generated targets.
      **kwargs: common attributes (tags, ...) for every target.
    """
    native.filegroup(
        name = "files",
        srcs = [spec] + srcs + fixtures,
        visibility = visibility,
        **kwargs
    )
    py_test(
        name = "check",
        srcs = [Label("//builder:workflow_check.py")],
        main = Label("//builder:workflow_check.py"),
        args = ["$(location %s)" % spec],
        data = [":files"],
        deps = [Label("//builder:workflow_check")],
        env = {"PIPEDREAMER_WORKFLOW": name},
        visibility = visibility,
        **kwargs
    )
