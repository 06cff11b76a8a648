#!/usr/bin/env bash
# Build, once and cached, the Kubernetes parts the integration tests run for real:
#
#   kube-apiserver           k8s.io/kubernetes/cmd/kube-apiserver           (tools/kube/kubernetes)
#   kube-controller-manager  k8s.io/kubernetes/cmd/kube-controller-manager  (tools/kube/kubernetes)
#   etcd                     go.etcd.io/etcd/server/v3                      (tools/kube/etcd)
#   kube-score               github.com/zegl/kube-score/cmd/kube-score      (tools/kube/kube-score)
#
# Each tool has its own small Go module beside this script whose go.mod pins
# the release and whose go.sum pins every module's hash. k8s.io/kubernetes maps
# its k8s.io/* staging modules to ./staging with `replace`, which only works
# inside its own repository, so tools/kube/kubernetes/go.mod maps each of them to
# its published v0.X.Y instead.
#
# Binaries land in ${PIPEDREAMER_CACHE:-$HOME/.cache/pipedreamer}/kube/<tool>/<version>-<key>/
# (key: hash of go.mod, go.sum, Go version and link flags) and are linked from
# .../kube/bin/<tool>, where tests/kube_cluster.py looks for them. A second run
# finds them and exits in well under a second. Prints `<tool>=<path>` lines on
# stdout; progress goes to stderr.
#
# Usage: tools/kube/build.sh [kube-apiserver|kube-controller-manager|etcd|kube-score ...]
#        (default: all four)
# Env:   PIPEDREAMER_CACHE  cache root;  GO  go command;  KUBE_BUILD_JOBS  go build -p (2)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
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

# build_tool NAME MODDIR PACKAGE MODULE LDFLAGS
build_tool() {
    local name=$1 moddir=$here/$2 pkg=$3 module=$4 ldflags=$5
    local version key dir out tmp start
    version=$(module_version "$moddir" "$module")
    [[ -n $version ]] || die "$moddir/go.mod does not require $module"
    key=$(cat "$moddir/go.mod" "$moddir/go.sum" <(printf '%s\n%s\n' "$go_version" "$ldflags") |
        sha256sum | cut -c1-12)
    dir=$cache/$name/$version-$key
    out=$dir/$name
    if [[ ! -x $out ]]; then
        log "building $name $version ($pkg); cold builds take minutes"
        start=$SECONDS
        mkdir -p "$dir"
        tmp=$(mktemp "$dir/.$name.XXXXXX")
        if ! CGO_ENABLED=0 "$go" build -C "$moddir" -mod=readonly -trimpath -buildvcs=false \
            -p "$jobs" -ldflags "-s -w $ldflags" -o "$tmp" "$pkg"; then
            rm -f "$tmp"
            die "go build $pkg failed"
        fi
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
    build_tool "$1" kubernetes "k8s.io/kubernetes/cmd/$1" k8s.io/kubernetes \
        "-X $x.gitVersion=$v -X $x.gitMajor=1 -X $x.gitMinor=$minor -X $x.gitTreeState=clean -X $x.gitCommit=$v -X $x.buildDate=1970-01-01T00:00:00Z"
}

build_etcd() {
    local v
    v=$(module_version "$here/etcd" go.etcd.io/etcd/server/v3)
    build_tool etcd etcd go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3 \
        "-X go.etcd.io/etcd/api/v3/version.GitSHA=$v"
}

build_kube_score() {
    local v x=main
    v=$(module_version "$here/kube-score" github.com/zegl/kube-score)
    build_tool kube-score kube-score github.com/zegl/kube-score/cmd/kube-score github.com/zegl/kube-score \
        "-X $x.version=$v -X $x.commit=$v -X $x.date=1970-01-01T00:00:00Z"
}

go=$(find_go) || die "no Go toolchain: install Go (/usr/local/go/bin/go) or set GO"
go_version=$("$go" env GOVERSION) || die "$go does not run"

tools=("$@")
[[ ${#tools[@]} -gt 0 ]] || tools=(kube-apiserver kube-controller-manager etcd kube-score)

mkdir -p "$cache"
# One builder at a time (parallel test sessions share the cache).
exec 9>"$cache/.lock"
flock 9

for t in "${tools[@]}"; do
    case $t in
        kube-apiserver | kube-controller-manager) build_kubernetes "$t" ;;
        etcd) build_etcd ;;
        kube-score) build_kube_score ;;
        *) die "unknown tool: $t (kube-apiserver, kube-controller-manager, etcd, kube-score)" ;;
    esac
done
