"""pipedreamer_base: the distroless Python base as an OCI layout, assembled from locked .debs."""

load("//builder:image_defaults.bzl", "IMAGE_SOURCE_DATE_EPOCH")

def _base_impl(ctx):
    out = ctx.actions.declare_directory(ctx.label.name)
    args = ctx.actions.args()
    args.add("--out", out.path)
    args.add("--arch", ctx.attr.arch)
    args.add("--lock", ctx.file.lock)
    args.add("--source-date-epoch", str(ctx.attr.source_date_epoch))
    args.add_all(ctx.files.debs, before_each = "--deb")
    ctx.actions.run(
        executable = ctx.executable._assemble,
        arguments = [args],
        inputs = ctx.files.debs + [ctx.file.lock],
        outputs = [out],
        # PATH for the helpers assemble.py may need: zstd (for .zst package data)
        # and, for a foreign architecture, qemu-user-static to run its ldconfig.
        use_default_shell_env = True,
        mnemonic = "PipedreamerBase",
        progress_message = "Assembling the %s base %%{label}" % ctx.attr.arch,
    )
    return [DefaultInfo(files = depset([out]))]

pipedreamer_base = rule(
    implementation = _base_impl,
    doc = """The base for one architecture as an OCI layout directory (oci_image's `base`).

deploy/base/assemble.py --deb ... matches the given .deb files to the lock by
sha256 (every locked package exactly once, nothing else), unpacks them without
dpkg and writes a one-layer image whose index.json points at its manifest.
Building for an architecture other than the host's runs the package's own
ldconfig under qemu-user-static (Debian package qemu-user-static).""",
    attrs = {
        "arch": attr.string(mandatory = True, values = ["amd64", "arm64"]),
        "debs": attr.label_list(allow_files = [".deb"], mandatory = True),
        "lock": attr.label(allow_single_file = [".json"], default = Label("//deploy/base:lock.json")),
        "source_date_epoch": attr.int(default = IMAGE_SOURCE_DATE_EPOCH),
        "_assemble": attr.label(
            default = Label("//deploy/base:assemble"),
            executable = True,
            cfg = "exec",
        ),
    },
)
