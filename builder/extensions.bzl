"""image_wheels: the images' third-party layer, made at fetch time.

For each platform, a repository `<name>_linux_<arch>` holding `wheels.tar.gz`:
builder/layer_tool.py `wheels --lock` installs every wheel of the runtime lock
(//requirements:runtime.txt) with `pipedreamer build`'s own pip call
(builder/wheels.py install_wheels: hashes required, binary wheels only, the
image's Python version and manylinux platform) and writes the layer with the
plain path's tar writer, compressed by the `deflate` wheel pinned in the CLI's
lock (`deflate_lock`). Same lock, Python and platform: same bytes as the wheels
layer `pipedreamer build` puts in its images.

Why not the @pip hub: rules_python's wheel repositories are installed by
rules_python's own installer, for the host platform only, with namespace
`__init__.py` files it adds; those trees differ from pip's and could not give
the plain path's layer, nor an arm64 one on an amd64 host.

This is the one network step of an image build, so it runs where Bazel allows
the network: in a repository rule, cached like any download.
"""

load(":image_defaults.bzl", "IMAGE_PYTHON_VERSION", "IMAGE_SOURCE_DATE_EPOCH")

# What layer_tool imports; a change to any of them refetches the layer.
_TOOL_SOURCES = [
    Label("//builder:__init__.py"),
    Label("//builder:build.py"),
    Label("//builder:errors.py"),
    Label("//builder:layer_tool.py"),
    Label("//builder:layers.py"),
    Label("//builder:oci.py"),
    Label("//builder:wheels.py"),
]

def _wheels_repo_impl(rctx):
    for source in _TOOL_SOURCES:
        rctx.watch(source)
    tool = rctx.path(Label("//builder:layer_tool.py"))
    root = tool.dirname.dirname
    python = rctx.path(rctx.attr.python)
    result = rctx.execute(
        [
            python,
            tool,
            "wheels",
            "--lock",
            rctx.path(rctx.attr.lock),
            "--deflate-lock",
            rctx.path(rctx.attr.deflate_lock),
            "--python-version",
            rctx.attr.python_version,
            "--platform",
            rctx.attr.platform,
            "--source-date-epoch",
            str(rctx.attr.source_date_epoch),
            "--out",
            "wheels.tar.gz",
            "--digest-out",
            "wheels.json",
        ],
        environment = {
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": str(root),
        },
        timeout = 3600,
        quiet = False,
    )
    if result.return_code != 0:
        fail("installing the locked wheels for %s (Python %s) failed:\n%s%s" % (
            rctx.attr.platform,
            rctx.attr.python_version,
            result.stdout,
            result.stderr,
        ))
    rctx.file("BUILD.bazel", """\
# The wheels layer for {platform}, Python {python_version} (builder/extensions.bzl).
exports_files(
    ["wheels.tar.gz", "wheels.json"],
    visibility = ["//visibility:public"],
)
""".format(platform = rctx.attr.platform, python_version = rctx.attr.python_version))

_wheels_repo = repository_rule(
    implementation = _wheels_repo_impl,
    attrs = {
        "deflate_lock": attr.label(mandatory = True, allow_single_file = True),
        "lock": attr.label(mandatory = True, allow_single_file = True),
        "platform": attr.string(mandatory = True),
        "python": attr.label(mandatory = True, allow_single_file = True),
        "python_version": attr.string(mandatory = True),
        "source_date_epoch": attr.int(mandatory = True),
    },
)

_install = tag_class(
    doc = "Declares `<name>_linux_amd64` and `<name>_linux_arm64` (one per platform).",
    attrs = {
        "deflate_lock": attr.label(
            mandatory = True,
            doc = "the lock pinning `deflate`, the layers' compressor (//requirements:cli.txt); " +
                  "nothing of it goes into the layer.",
        ),
        "lock": attr.label(
            mandatory = True,
            doc = "the runtime lock (//requirements:runtime.txt): the layer holds exactly its packages.",
        ),
        "name": attr.string(default = "image_wheels", doc = "prefix of the repository names."),
        "platforms": attr.string_list(default = ["linux/amd64", "linux/arm64"]),
        "python": attr.label(
            mandatory = True,
            doc = "the interpreter that runs pip: @python_3_13_host//:python (rules_python's " +
                  "hermetic host interpreter). It only runs pip; the wheels are chosen for python_version.",
        ),
        "python_version": attr.string(default = IMAGE_PYTHON_VERSION, doc = "the base image's Python."),
        "source_date_epoch": attr.int(default = IMAGE_SOURCE_DATE_EPOCH, doc = "mtime of the layer's entries."),
    },
)

def _image_wheels_impl(mctx):
    seen = {}
    for mod in mctx.modules:
        for tag in mod.tags.install:
            for platform in tag.platforms:
                os, _, arch = platform.partition("/")
                if os != "linux" or arch not in ("amd64", "arm64"):
                    fail("image_wheels: platform %r: supported are linux/amd64 and linux/arm64" % platform)
                name = "%s_%s_%s" % (tag.name, os, arch)
                if name in seen:
                    fail("image_wheels: %s is declared twice" % name)
                seen[name] = True
                _wheels_repo(
                    name = name,
                    deflate_lock = tag.deflate_lock,
                    lock = tag.lock,
                    platform = platform,
                    python = tag.python,
                    python_version = tag.python_version,
                    source_date_epoch = tag.source_date_epoch,
                )
    return mctx.extension_metadata(reproducible = True)

image_wheels = module_extension(
    implementation = _image_wheels_impl,
    tag_classes = {"install": _install},
    doc = "The images' wheels layer per platform, installed from the runtime lock at fetch time.",
)
