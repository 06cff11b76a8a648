#!/usr/bin/env bash
# Build, once and cached, the Kubernetes parts the integration tests run for real.
#
# The control plane:
#   kube-apiserver           k8s.io/kubernetes/cmd/kube-apiserver           (tools/kube/kubernetes)
#   kube-controller-manager  k8s.io/kubernetes/cmd/kube-controller-manager  (tools/kube/kubernetes)
#   etcd                     go.etcd.io/etcd/server/v3                      (tools/kube/etcd)
#   kube-score               github.com/zegl/kube-score/cmd/kube-score      (tools/kube/kube-score)
#   crane                    github.com/google/go-containerregistry/cmd/crane  (tools/kube/crane)
# A real node (tests/kube_node.py), from the same k8s.io/kubernetes module:
#   kube-scheduler, kubelet, kube-proxy  k8s.io/kubernetes/cmd/...          (tools/kube/kubernetes)
#   containerd, containerd-shim-runc-v2  github.com/containerd/containerd/v2 (tools/kube/containerd)
#   bridge, host-local, loopback         github.com/containernetworking/plugins (tools/kube/cni)
#   runsc, containerd-shim-runsc-v1      gvisor.dev/gvisor, its `go` branch (tools/gvisor/go)
#   coredns                              github.com/coredns/coredns, a few plugins (tools/kube/coredns)
#
# Each tool has its own small Go module whose go.mod pins the release
# (and, with a `tool` line, the command) and whose go.sum pins every module's
# hash. k8s.io/kubernetes maps its k8s.io/* staging modules to ./staging with
# `replace`, which only works inside its own repository, so
# tools/kube/kubernetes/go.mod maps each of them to its published v0.X.Y instead.
#
# Binaries land in ${PIPEDREAMER_CACHE:-$HOME/.cache/pipedreamer}/kube/<tool>/<version>-<key>/
# (key: hash of go.mod, go.sum, Go version, build tags and link flags) and are
# linked from .../kube/bin/<tool>, where tests/kube_cluster.py and
# tests/kube_node.py look for them. A second run finds them and exits in well
# under a second. Prints `<tool>=<path>` lines on stdout; progress goes to stderr.
#
# Usage: tools/kube/build.sh [TOOL ...|control-plane|node]   (default: all)
# Env:   PIPEDREAMER_CACHE  cache root;  GO  go command;  KUBE_BUILD_JOBS  go build -p (2)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tools_dir=$(dirname "$here")
cache=${PIPEDREAMER_CACHE:-$HOME/.cache/pipedreamer}/kube
jobs=${KUBE_BUILD_JOBS:-2}

log() { printf 'kube/build: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

find_go() {
    if [[ -n ${GO:-} ]]; then
        printf '%s\n' "$GO"
    elif command -v go >/dev/null 2>&1; then
        command -v go
    elif [[ -x /usr/local/go/bin/go ]]; then
        printf '%s\n' /usr/local/go/bin/go
    else
        return 1
    fi
}

# module_version MODDIR MODULE -> the version MODDIR/go.mod requires of MODULE
module_version() {
    awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1/go.mod"
}

# patched_modfile MODDIR MODULE PATCH OUT: an alternate go.mod (OUT/go.mod, for
# go build -modfile) that replaces MODULE with a copy of its source in OUT/src
# with PATCH applied (unified diff, a/ b/ paths from the module's root). The
# module cache stays as the proxy served it, and go.sum still pins everything else.
patched_modfile() {
    local moddir=$1 module=$2 patch=$3 out=$4 src
    src=$("$go" list -C "$moddir" -mod=readonly -m -f '{{.Dir}}' "$module") || die "cannot locate $module"
    mkdir -p "$out"
    cp -r "$src" "$out/src"
    chmod -R u+w "$out/src"
    patch -s -p1 -d "$out/src" <"$patch" || die "$patch does not apply to $module"
    cp "$moddir/go.mod" "$out/go.mod"
    cp "$moddir/go.sum" "$out/go.sum"
    printf '\nreplace %s => %s\n' "$module" "$out/src" >>"$out/go.mod"
}

# build_tool NAME MODDIR PACKAGE MODULE LDFLAGS [TAGS] [PATCH]   (MODDIR relative to tools/,
# PATCH relative to MODDIR: a patch to the module's source, built through go build -modfile)
build_tool() {
    local name=$1 moddir=$tools_dir/$2 pkg=$3 module=$4 ldflags=$5 tags=${6:-} patch=${7:-}
    local version key dir out tmp start patched=()
    version=$(module_version "$moddir" "$module")
    [[ -n $version ]] || die "$moddir/go.mod does not require $module"
    # A module with Go code of its own (coredns's main.go) or a patch hashes that too.
    local sources=("$moddir/go.mod" "$moddir/go.sum")
    mapfile -t -O 2 sources < <(compgen -G "$moddir/*.go" | sort)
    [[ -z $patch ]] || sources+=("$moddir/$patch")
    key=$(cat "${sources[@]}" <(printf '%s\n%s\n%s\n' "$go_version" "$ldflags" "$tags") |
        sha256sum | cut -c1-12)
    dir=$cache/$name/$version-$key
    out=$dir/$name
    if [[ ! -x $out ]]; then
        log "building $name $version ($pkg); cold builds take minutes"
        start=$SECONDS
        mkdir -p "$dir"
        tmp=$(mktemp "$dir/.$name.XXXXXX")
        if [[ -n $patch ]]; then
            patched_modfile "$moddir" "$module" "$moddir/$patch" "$tmp.patched"
            patched=(-modfile "$tmp.patched/go.mod")
            log "patching $module with $patch"
        fi
        if ! CGO_ENABLED=0 "$go" build -C "$moddir" -mod=readonly -trimpath -buildvcs=false \
            -p "$jobs" -tags "$tags" "${patched[@]}" -ldflags "-s -w $ldflags" -o "$tmp" "$pkg"; then
            rm -rf "$tmp" "$tmp.patched"
            die "go build $pkg failed"
        fi
        rm -rf "$tmp.patched"
        chmod 0755 "$tmp"
        mv -f "$tmp" "$out"
        log "built $name $version in $((SECONDS - start))s"
    fi
    mkdir -p "$cache/bin"
    ln -sfn "$out" "$cache/bin/$name"
    printf '%s=%s\n' "$name" "$out"
}

# build_kubernetes NAME: a command of k8s.io/kubernetes, stamped with the
# version information hack/lib/version.sh gives a release build (the build
# date is fixed, so that the binary is reproducible).
build_kubernetes() {
    local v minor x=k8s.io/component-base/version
    v=$(module_version "$here/kubernetes" k8s.io/kubernetes)
    minor=${v#v*.}
    minor=${minor%%.*}
    build_tool "$1" kube/kubernetes "k8s.io/kubernetes/cmd/$1" k8s.io/kubernetes \
        "-X $x.gitVersion=$v -X $x.gitMajor=1 -X $x.gitMinor=$minor -X $x.gitTreeState=clean -X $x.gitCommit=$v -X $x.buildDate=1970-01-01T00:00:00Z"
}

build_etcd() {
    local v
    v=$(module_version "$here/etcd" go.etcd.io/etcd/server/v3)
    build_tool etcd kube/etcd go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3 \
        "-X go.etcd.io/etcd/api/v3/version.GitSHA=$v"
}

build_kube_score() {
    local v x=main
    v=$(module_version "$here/kube-score" github.com/zegl/kube-score)
    build_tool kube-score kube/kube-score github.com/zegl/kube-score/cmd/kube-score github.com/zegl/kube-score \
        "-X $x.version=$v -X $x.commit=$v -X $x.date=1970-01-01T00:00:00Z"
}

build_crane() {
    local v
    v=$(module_version "$here/crane" github.com/google/go-containerregistry)
    build_tool crane kube/crane github.com/google/go-containerregistry/cmd/crane github.com/google/go-containerregistry \
        "-X github.com/google/go-containerregistry/cmd/crane/cmd.Version=$v"
}

# containerd without the snapshotters that need cgo or kernel extras (btrfs,
# devicemapper, zfs): the node uses overlayfs, and native where overlayfs fails.
build_containerd() {
    local v x=github.com/containerd/containerd/v2/version
    v=$(module_version "$here/containerd" github.com/containerd/containerd/v2)
    build_tool "$1" kube/containerd "github.com/containerd/containerd/v2/cmd/$1" github.com/containerd/containerd/v2 \
        "-X $x.Version=$v -X $x.Revision=$v" "no_btrfs no_devmapper no_zfs"
}

build_cni() {
    local dir
    case $1 in
        bridge | loopback) dir=main ;;
        host-local) dir=ipam ;;
    esac
    build_tool "$1" kube/cni "github.com/containernetworking/plugins/plugins/$dir/$1" github.com/containernetworking/plugins \
        "-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$(module_version "$here/cni" github.com/containernetworking/plugins)"
}

# gVisor from its `go` branch (the module proxy serves it as a pseudo-version):
# newer than Debian 13's 2024-07-29 runsc, whose own network stack does not
# start on Linux >= 6.11 (gvisor#10704). The shim gets one patch
# (tools/gvisor/go/shim-oom-score.patch): it gives up when it may not lower
# its OOM score, which root cannot do without CAP_SYS_RESOURCE (as in the VMs
# these tests run in); patched, it warns and goes on, as containerd's shims do.
build_gvisor() {
    local v pkg patch=""
    v=$(module_version "$tools_dir/gvisor/go" gvisor.dev/gvisor)
    case $1 in
        runsc) pkg=gvisor.dev/gvisor/runsc ;;
        containerd-shim-runsc-v1) pkg=gvisor.dev/gvisor/shim patch=shim-oom-score.patch ;;
    esac
    build_tool "$1" gvisor/go "$pkg" gvisor.dev/gvisor "-X gvisor.dev/gvisor/runsc/version.version=$v" "" "$patch"
}

build_coredns() {
    build_tool coredns kube/coredns . github.com/coredns/coredns \
        "-X github.com/coredns/coredns/coremain.GitCommit=$(module_version "$here/coredns" github.com/coredns/coredns)"
}

go=$(find_go) || die "no Go toolchain: install Go (/usr/local/go/bin/go) or set GO"
go_version=$("$go" env GOVERSION) || die "$go does not run"

control_plane=(kube-apiserver kube-controller-manager etcd kube-score crane)
node=(kube-scheduler kubelet kube-proxy containerd containerd-shim-runc-v2 bridge host-local loopback
    runsc containerd-shim-runsc-v1 coredns)
tools=()
for t in "$@"; do
    case $t in
        control-plane) tools+=("${control_plane[@]}") ;;
        node) tools+=("${node[@]}") ;;
        *) tools+=("$t") ;;
    esac
done
[[ ${#tools[@]} -gt 0 ]] || tools=("${control_plane[@]}" "${node[@]}")

mkdir -p "$cache"
# One builder at a time (parallel test sessions share the cache).
exec 9>"$cache/.lock"
flock 9

for t in "${tools[@]}"; do
    case $t in
        kube-apiserver | kube-controller-manager | kube-scheduler | kubelet | kube-proxy) build_kubernetes "$t" ;;
        etcd) build_etcd ;;
        kube-score) build_kube_score ;;
        crane) build_crane ;;
        containerd | containerd-shim-runc-v2) build_containerd "$t" ;;
        bridge | host-local | loopback) build_cni "$t" ;;
        runsc | containerd-shim-runsc-v1) build_gvisor "$t" ;;
        coredns) build_coredns ;;
        *) die "unknown tool: $t (${control_plane[*]} ${node[*]}, or control-plane, node)" ;;
    esac
done
