"""debian_packages: every .deb of deploy/base/lock.json as a sha256-pinned http_file.

    debian = use_extension("//deploy/base:extensions.bzl", "debian_packages")
    debian.lock(lock = "//deploy/base:lock.json")
    use_repo(debian, "debian_base_debs")

gives `@debian_base_debs//:amd64` and `@debian_base_debs//:arm64`, the locked
packages of each architecture, for //deploy/base:base (base.bzl runs
assemble.py over them). The URL of a package is its `filename` (a pool path)
under the archive the lock's `sources` name: `pool/updates/...` comes from the
security archive, everything else from the main one. Bazel checks each
download against the lock's sha256, and assemble.py checks them again.

Debian drops superseded versions from its pool. `snapshot` (a
snapshot.debian.org timestamp such as 20260101T000000Z, taken when the lock
was refreshed) adds snapshot.debian.org URLs that keep working after that.
"""

load("@bazel_tools//tools/build_defs/repo:http.bzl", "http_file")

def _archive_roots(lock):
    """(main archive URIs, security archive URIs) from the lock's `sources` lines."""
    main, security = [], []
    for source in lock.get("sources", []):
        uri = source.split(" ")[0].rstrip("/")
        roots = security if uri.endswith("-security") else main
        if uri not in roots:
            roots.append(uri)
    if not main or not security:
        fail("deploy/base lock: `sources` must name the main and the -security archive")
    return main, security

def _urls(filename, roots, snapshot):
    urls = []
    for root in roots:
        https = root.replace("http://", "https://", 1)
        for base in [https, root]:
            url = "%s/%s" % (base, filename)
            if url not in urls:
                urls.append(url)
    if snapshot:
        for root in roots:
            archive = root.rsplit("/", 1)[-1]
            urls.append("https://snapshot.debian.org/archive/%s/%s/%s" % (archive, snapshot, filename))
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
            doc = "a snapshot.debian.org timestamp for fallback URLs (default: the lock's own `snapshot`).",
        ),
    },
)

def _debian_packages_impl(mctx):
    for mod in mctx.modules:
        for tag in mod.tags.lock:
            lock = json.decode(mctx.read(tag.lock))
            main, security = _archive_roots(lock)
            hub = {}
            for arch, packages in sorted(lock.get("architectures", {}).items()):
                repos = []
                for package, info in sorted(packages.items()):
                    filename = info["filename"]
                    if not filename.startswith("pool/") or len(info.get("sha256", "")) != 64:
                        fail("deploy/base lock: %s/%s needs a pool/ filename and a sha256" % (arch, package))
                    roots = security if filename.startswith("pool/updates/") else main
                    name = _repo_name(tag.name, arch, package)
                    if name in repos:
                        fail("deploy/base lock: two packages of %s map to repository %s" % (arch, name))
                    http_file(
                        name = name,
                        urls = _urls(filename, roots, tag.snapshot or lock.get("snapshot", "")),
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
