"""pipedreamer_workflow: the Bazel targets of one workflow project."""

load("@rules_python//python:defs.bzl", "py_binary", "py_test")
load("//builder:image.bzl", "pipedreamer_image", "pipedreamer_layer")
load("//builder:image_defaults.bzl", "DEFAULT_REGISTRY")

# What `pipedreamer build` never copies to /app (builder/build.py WORKFLOW_EXCLUSIONS):
# hidden files and directories and `*.secrets.yaml` at any depth; at the top
# `secrets/`, `tests/`, `bazel-*`, Bazel files and Dockerfile.pipedreamer; caches
# everywhere. The layer tool applies build.py's own rules again; this keeps such
# files (secrets among them) out of the action's inputs. It must match build.py
# exactly (builder/layer_tool_test.py checks), or the two layers would differ.
WORKFLOW_LAYER_EXCLUDES = [
    "**/.*",
    "**/.*/**",
    "**/*.secrets.yaml",
    "**/*.secrets.yaml/**",
    "**/*.secrets.yml",
    "**/*.secrets.yml/**",
    "secrets",
    "secrets/**",
    "bazel-*/**",
    "tests/**",
    "BUILD",
    "BUILD.bazel",
    "Dockerfile.pipedreamer",
    "**/__pycache__/**",
    "**/*.pyc",
    "**/*.pyo",
]

def pipedreamer_workflow(
        name,
        spec,
        srcs,
        fixtures = [],
        data = None,
        base = None,
        repository = None,
        visibility = None,
        **kwargs):
    """Declares a workflow's targets.

    :files      the spec, node sources and fixtures (public by default: tests elsewhere read them)
    :check      bazel test: `pipedreamer validate` then `pipedreamer test`
    :deploy     bazel run: `pipedreamer deploy` on this directory (-- --dry-run prints the manifests)
    :layers     the image's three layer tars (wheels, engine, workflow at /app), byte for
                byte what `pipedreamer build` writes
    :image      rules_oci image: base, wheels, engine and workflow layers, configured as
                `pipedreamer build` configures it (entrypoint, env, user 65534, /app, labels)
    :push       bazel run: push :image to `repository`, tagged with the workflow version
    :load       bazel run: load :image into docker/podman as <name>:<version>

    Build for arm64 with --platforms=//deploy/platforms:linux_arm64.

    Args:
      name: the workflow name (as in workflow.yaml).
      spec: the workflow.yaml file.
      srcs: the node sources (nodes/**/*.py).
      fixtures: tests/fixtures/*.json.
      data: the files of the workflow directory that go to /app. Default: every
        file of the package except WORKFLOW_LAYER_EXCLUDES, as `pipedreamer build`
        takes the whole directory.
      base: the base image (an OCI layout target). Default: //deploy/base:image,
        assembled from deploy/base/lock.json for the target platform.
      repository: where :push pushes. Default: localhost:30500/<name>.
      visibility: visibility of the generated targets (:files and :layers default to public).
      **kwargs: common attributes (tags, ...) for every target.
    """
    tags = kwargs.pop("tags", [])
    native.filegroup(
        name = "files",
        srcs = [spec] + srcs + fixtures,
        visibility = visibility or ["//visibility:public"],
        tags = tags,
        **kwargs
    )
    py_test(
        name = "check",
        srcs = [Label("//builder:workflow_check.py")],
        main = Label("//builder:workflow_check.py"),
        args = ["$(rootpath %s)" % spec],
        data = [
            spec,
            ":files",
        ],
        deps = [Label("//builder:workflow_check")],
        env = {"PIPEDREAMER_WORKFLOW": name},
        visibility = visibility,
        tags = tags,
        **kwargs
    )

    py_binary(
        name = "deploy",
        srcs = [Label("//builder:workflow_deploy.py")],
        main = Label("//builder:workflow_deploy.py"),
        args = ["$(rootpath %s)" % spec],
        data = [
            spec,
            ":files",
        ],
        deps = [Label("//builder:workflow_deploy")],
        visibility = visibility,
        tags = tags,
        **kwargs
    )

    if data == None:
        data = native.glob(["**"], exclude = WORKFLOW_LAYER_EXCLUDES, allow_empty = True)
    layer_srcs = {label: None for label in [spec] + srcs + data}.keys()
    pipedreamer_layer(
        name = "workflow_layer",
        mode = "workflow",
        spec = spec,
        srcs = layer_srcs,
        visibility = ["//visibility:private"],
        tags = tags,
        **kwargs
    )
    native.filegroup(
        name = "layers",
        # The image's tars in order: third-party wheels, the engine, the workflow.
        srcs = [
            Label("//deploy/engine:wheels_layer"),
            Label("//deploy/engine:engine_layer"),
            ":workflow_layer",
        ],
        visibility = visibility or ["//visibility:public"],
        tags = tags,
        **kwargs
    )
    pipedreamer_image(
        name = "image",
        base = base or Label("//deploy/base:image"),
        tars = [
            Label("//deploy/engine:wheels_layer"),
            Label("//deploy/engine:engine_layer"),
            ":workflow_layer",
        ],
        spec = spec,
        srcs = srcs,
        repository = repository or "%s/%s" % (DEFAULT_REGISTRY, name),
        push_target = "push",
        load_target = "load",
        visibility = visibility,
        tags = tags,
        **kwargs
    )
