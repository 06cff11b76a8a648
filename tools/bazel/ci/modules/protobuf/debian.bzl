"""The sid root's protoc (protobuf-compiler) and well-known .proto files (libprotobuf-dev)."""

_WELL_KNOWN = [
    "any",
    "duration",
    "empty",
    "field_mask",
    "struct",
    "timestamp",
    "wrappers",
]

def _debian_protobuf_impl(rctx):
    rctx.symlink("/usr/bin/protoc", "protoc")
    build = [
        "# Debian's protoc and well-known types (tools/bazel/ci/modules/protobuf/debian.bzl).",
        "package(default_visibility = [\"//visibility:public\"])",
        "",
        "exports_files([\"protoc\"])",
        "",
    ]
    for name in _WELL_KNOWN:
        source = "google/protobuf/%s.proto" % name
        rctx.symlink("/usr/include/" + source, source)
        build.append("proto_library(name = \"%s_proto\", srcs = [\"%s\"])" % (name, source))
        build.append("")
    rctx.file("BUILD.bazel", "\n".join(build))

_debian_protobuf = repository_rule(
    implementation = _debian_protobuf_impl,
    local = True,
)

def _extension_impl(_mctx):
    _debian_protobuf(name = "debian_protobuf")

debian_protobuf = module_extension(implementation = _extension_impl)
