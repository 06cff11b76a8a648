"""Image targets built from the plain path's own code: layer tars and rules_oci settings.

`pipedreamer_layer` runs //builder:layer_tool (builder/layer_tool.py) as an
action, so its tar has the bytes `pipedreamer build` writes for the same files.
`pipedreamer_image` is a rules_oci `oci_image` (plus `oci_push`/`oci_load`)
whose entrypoint, env, labels, annotations and `created` come from
builder/build.py's `image_settings` through `layer_tool config`.
"""

load("@rules_oci//oci:defs.bzl", "oci_image", "oci_load", "oci_push")
load(
    ":image_defaults.bzl",
    "DEFAULT_REGISTRY",
    "IMAGE_PYTHON_VERSION",
    "IMAGE_SOURCE_DATE_EPOCH",
    "IMAGE_USER",
    "IMAGE_WORKDIR",
)

_CONFIG_FILES = [
    "entrypoint",
    "env",
    "labels",
    "annotations",
    "created",
    "exposed_ports",
    "repo_tags",
    "remote_tags",
]

def _layer_impl(ctx):
    if ctx.attr.mode == "workflow" and not ctx.file.spec:
        fail("pipedreamer_layer(mode = \"workflow\") needs spec")
    out = ctx.actions.declare_file(ctx.label.name + ".tar.gz")
    args = ctx.actions.args()
    args.use_param_file("@%s", use_always = True)
    args.set_param_file_format("multiline")
    args.add(ctx.attr.mode)
    if ctx.attr.mode == "workflow":
        args.add("--spec", ctx.file.spec)
    args.add("--out", out)
    args.add("--source-date-epoch", str(ctx.attr.source_date_epoch))
    args.add_all(ctx.files.srcs)
    inputs = depset(ctx.files.srcs + ([ctx.file.spec] if ctx.file.spec else []))
    ctx.actions.run(
        executable = ctx.executable._tool,
        arguments = [args],
        inputs = inputs,
        outputs = [out],
        mnemonic = "PipedreamerLayer",
        progress_message = "Writing the %s layer of %%{label}" % ctx.attr.mode,
    )
    return [DefaultInfo(files = depset([out]))]

pipedreamer_layer = rule(
    implementation = _layer_impl,
    doc = """A deterministic layer tar (`<name>.tar.gz`) written by builder/layer_tool.py.

mode "workflow": the /app layer of the workflow whose workflow.yaml is `spec`;
`srcs` are the files of its directory (files elsewhere are refused). mode
"engine": engine/ and proto/ (generated stubs included) at /opt/pipedreamer/lib.
In both, builder/build.py's own exclusions apply (tests, BUILD files, caches,
hidden files), so extra inputs never reach the tar.""",
    attrs = {
        "mode": attr.string(mandatory = True, values = ["workflow", "engine"]),
        "source_date_epoch": attr.int(
            default = IMAGE_SOURCE_DATE_EPOCH,
            doc = "mtime of every entry (as SOURCE_DATE_EPOCH for `pipedreamer build`).",
        ),
        "spec": attr.label(allow_single_file = True, doc = "mode workflow: the workflow.yaml."),
        "srcs": attr.label_list(allow_files = True, doc = "the files to put in the layer."),
        "_tool": attr.label(
            default = Label("//builder:layer_tool"),
            executable = True,
            cfg = "exec",
        ),
    },
)

def pipedreamer_image(
        name,
        base,
        tars,
        spec = None,
        srcs = [],
        image_name = None,
        version = None,
        repository = None,
        push_target = None,
        load_target = None,
        python_version = IMAGE_PYTHON_VERSION,
        source_date_epoch = IMAGE_SOURCE_DATE_EPOCH,
        visibility = None,
        tags = [],
        **kwargs):
    """An `oci_image` configured as builder/build.py configures its images.

    Creates `name` (the OCI layout), `name + "_config"` (the config files,
    written by `layer_tool config`), and, when asked, an `oci_push` called
    `push_target` and an `oci_load` called `load_target` (tag `<image name>:<version>`).

    Args:
      name: the oci_image target.
      base: an OCI layout target: //deploy/base:image, or an oci.pull repository.
      tars: the layers, bottom first (wheels, engine, workflow).
      spec: a workflow's workflow.yaml: name, version and labels come from it.
      srcs: with spec: the workflow's node files (the spec is validated with them).
      image_name: without spec: the image name (e.g. pipedreamer-engine).
      version: without spec: the image version (tag).
      repository: where `push_target` pushes; default DEFAULT_REGISTRY/<image name>.
        Override at run time with `bazel run :push -- --repository host/repo`.
      push_target: the name of the oci_push target (tagged manual), or None.
      load_target: the name of the oci_load target, or None.
      python_version: the base's Python (the `dev.pipedreamer.python.version` label).
      source_date_epoch: the image's `created` time.
      visibility: of the image, push and load targets.
      tags: for every target.
      **kwargs: common attributes (testonly, ...) for every target.
    """
    tool = Label("//builder:layer_tool")
    outs = ["%s.%s.txt" % (name, kind) for kind in _CONFIG_FILES]
    if spec:
        what = "--spec $(execpath %s) $(SRCS)" % spec
        config_srcs = {label: None for label in [spec] + srcs}.keys()
        image_repository = repository
    else:
        if not image_name or not version:
            fail("pipedreamer_image without spec needs image_name and version")
        what = "--name %s --version %s" % (image_name, version)
        config_srcs = []
        image_repository = repository or "%s/%s" % (DEFAULT_REGISTRY, image_name)
    native.genrule(
        name = name + "_config",
        srcs = config_srcs,
        outs = outs,
        cmd = "$(execpath %s) config %s --python-version %s --source-date-epoch %d --out-prefix $(RULEDIR)/%s" % (
            tool,
            what,
            python_version,
            source_date_epoch,
            name,
        ),
        tools = [tool],
        tags = tags,
        visibility = ["//visibility:private"],
        **kwargs
    )

    config_file = {kind: ":%s.%s.txt" % (name, kind) for kind in _CONFIG_FILES}
    oci_image(
        name = name,
        base = base,
        tars = tars,
        entrypoint = config_file["entrypoint"],
        env = config_file["env"],
        labels = config_file["labels"],
        annotations = config_file["annotations"],
        created = config_file["created"],
        exposed_ports = config_file["exposed_ports"],
        user = IMAGE_USER,
        workdir = IMAGE_WORKDIR,
        visibility = visibility,
        tags = tags,
        **kwargs
    )
    if push_target:
        if not image_repository:
            fail("pipedreamer_image: push needs repository")
        oci_push(
            name = push_target,
            image = ":" + name,
            repository = image_repository,
            remote_tags = config_file["remote_tags"],
            visibility = visibility,
            tags = tags + ["manual"],
            **kwargs
        )
    if load_target:
        oci_load(
            name = load_target,
            image = ":" + name,
            repo_tags = config_file["repo_tags"],
            visibility = visibility,
            tags = tags,
            **kwargs
        )
