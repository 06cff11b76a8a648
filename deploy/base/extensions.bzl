"""debian_packages: every .deb of deploy/base/lock.json as a sha256-pinned http_file.

    debian = use_extension("//deploy/base:extensions.bzl", "debian_packages")
    debian.lock(lock = "//deploy/base:lock.json")
    use_repo(debian, "debian_base_debs")

gives `@debian_base_debs//:amd64` and `@debian_base_debs//:arm64`, the locked
packages of each architecture, for //deploy/base:base (base.bzl runs
assemble.py over them). The lock names no host: a package's URL is its
`filename` (a pool path) under the mirror that deploy/base/mirror.py chooses,
the same as the plain path's: `pool/updates/...` from the security archive,
everything else from the main one. Bazel checks each download against the
lock's sha256, and assemble.py checks them again.

The mirror, for each of main, security and snapshot, first found:
$PIPEDREAMER_DEBIAN_MIRROR / $PIPEDREAMER_DEBIAN_SECURITY_MIRROR /
$PIPEDREAMER_DEBIAN_SNAPSHOT (Bazel's repository environment: `--repo_env`
or the client's), the tag's `mirror` / `security_mirror` / `snapshot_url`,
else the machine's apt sources (read when the extension is evaluated; after
changing them, `bazel fetch --force`). Versions gone from the mirror come
from the snapshot service at the lock's `snapshot` time (default
snapshot.debian.org; "off" turns it off). mirror.py runs on `python` (the
hermetic host interpreter by default).
"""

load("@bazel_tools//tools/build_defs/repo:http.bzl", "http_file")

_MIRROR_SETTINGS = [
    # (mirror.py flag, tag attribute, environment variable)
    ("--mirror", "mirror", "PIPEDREAMER_DEBIAN_MIRROR"),
    ("--security-mirror", "security_mirror", "PIPEDREAMER_DEBIAN_SECURITY_MIRROR"),
    ("--snapshot", "snapshot_url", "PIPEDREAMER_DEBIAN_SNAPSHOT"),
]

def _mirrors(mctx, tag):
    """mirror.py's choice as a dict {main, security, snapshot, origin}."""
    args = [mctx.path(tag.python), mctx.path(Label("//deploy/base:mirror.py")), "--json"]
    for flag, attribute, variable in _MIRROR_SETTINGS:
        value = mctx.getenv(variable) or getattr(tag, attribute)
        if value:
            args.extend([flag, value])
    result = mctx.execute(args, quiet = True)
    if result.return_code != 0:
        fail("deploy/base: no Debian mirror: %s" % (result.stderr.strip() or result.stdout.strip()))
    return json.decode(result.stdout)

def _urls(filename, mirrors, snapshot):
    security = filename.startswith("pool/updates/")
    root = mirrors["security"] if security else mirrors["main"]
    urls = ["%s/%s" % (root, filename)]
    if snapshot and mirrors["snapshot"]:
        archive = "debian-security" if security else "debian"
        urls.append("%s/%s/%s/%s" % (mirrors["snapshot"], archive, snapshot, filename))
    return urls

def _repo_name(prefix, arch, package):
    """A repository name for a package (`libstdc++6` → `libstdc__6`)."""
    safe = "".join([c if c.isalnum() or c in "-._" else "_" for c in package.elems()])
    return "%s_%s_%s" % (prefix, arch, safe)

def _hub_impl(rctx):
    lines = [
        "# The .deb files of deploy/base/lock.json, per architecture (deploy/base/extensions.bzl).",
        "package(default_visibility = [\"//visibility:public\"])",
        "",
    ]
    for arch, repos in sorted(rctx.attr.debs.items()):
        lines.append("filegroup(")
        lines.append("    name = \"%s\"," % arch)
        lines.append("    srcs = [")
        lines.extend(["        \"@%s//file\"," % repo for repo in repos])
        lines.append("    ],")
        lines.append(")")
        lines.append("")
    rctx.file("BUILD.bazel", "\n".join(lines))

_hub = repository_rule(
    implementation = _hub_impl,
    attrs = {"debs": attr.string_list_dict(mandatory = True)},
)

_lock_tag = tag_class(
    attrs = {
        "lock": attr.label(mandatory = True, doc = "deploy/base/lock.json"),
        "name": attr.string(default = "debian_base_debs", doc = "the hub repository."),
        "snapshot": attr.string(
            default = "",
            doc = "a snapshot time such as 20260101T000000Z for fallback URLs (default: the lock's own `snapshot`).",
        ),
        "mirror": attr.string(default = "", doc = "the Debian archive's URL (default: the machine's apt sources)."),
        "security_mirror": attr.string(default = "", doc = "the security archive's URL (default: beside `mirror`)."),
        "snapshot_url": attr.string(
            default = "",
            doc = "the snapshot service's archive root, or \"off\" (default: https://snapshot.debian.org/archive).",
        ),
        "python": attr.label(
            default = Label("@python_3_13_host//:python"),
            doc = "the interpreter that runs deploy/base/mirror.py (standard library only).",
        ),
    },
)

def _debian_packages_impl(mctx):
    for mod in mctx.modules:
        for tag in mod.tags.lock:
            lock = json.decode(mctx.read(tag.lock))
            mirrors = _mirrors(mctx, tag)
            hub = {}
            for arch, packages in sorted(lock.get("architectures", {}).items()):
                repos = []
                for package, info in sorted(packages.items()):
                    filename = info["filename"]
                    if not filename.startswith("pool/") or len(info.get("sha256", "")) != 64:
                        fail("deploy/base lock: %s/%s needs a pool/ filename and a sha256" % (arch, package))
                    name = _repo_name(tag.name, arch, package)
                    if name in repos:
                        fail("deploy/base lock: two packages of %s map to repository %s" % (arch, name))
                    http_file(
                        name = name,
                        urls = _urls(filename, mirrors, tag.snapshot or lock.get("snapshot", "")),
                        sha256 = info["sha256"],
                        downloaded_file_path = filename.rsplit("/", 1)[-1],
                    )
                    repos.append(name)
                hub[arch] = repos
            _hub(name = tag.name, debs = hub)
    return mctx.extension_metadata(reproducible = True)

debian_packages = module_extension(
    implementation = _debian_packages_impl,
    tag_classes = {"lock": _lock_tag},
    doc = "The locked Debian packages of the distroless Python base, one http_file each.",
)
