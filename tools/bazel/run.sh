#!/usr/bin/env bash
# Runs real Bazel on this checkout: Debian sid's Bazel 7.7.1 (bazel-bootstrap) in
# a cached sid root, with the CI module overlay (tools/bazel/ci/README.md).
#
#   tools/bazel/run.sh test //...
#   tools/bazel/run.sh run //cli:pipedreamer -- validate examples/hello
#
# The root lives in ${PIPEDREAMER_CACHE:-$HOME/.cache/pipedreamer}/bazel-sid/<key>/,
# where <key> hashes tools/bazel/sid-packages.txt and tools/bazel/sid_root.sh: a
# change of either builds a new root (and removes the old ones). Bazel's output
# base, its repository cache and pip's downloads stay in the same cache, so a
# second run starts warm.
#
# The checkout is bind-mounted into the root at its own path, not copied: no copy
# to keep in sync, and Bazel sees edits at once. Bazel's workspace is
# /pipedreamer-ci inside the root: a symlink to each top-level entry of the
# checkout, except MODULE.bazel, which is the overlay's (tools/bazel/ci/). So the
# checkout's own MODULE.bazel stays what tests that read it expect, Bazel writes
# nothing into the checkout (no MODULE.bazel.lock, no bazel-* symlinks), and
# every mount lives in a private mount namespace (unshare) that ends with Bazel.
# The cache is mounted at its own path too, so output paths Bazel prints (and
# `bazel cquery --output=files`) are valid on the host. The Bazel server keeps
# the mount namespace it started in; a startup option naming the checkout makes
# Bazel start a new server when the checkout (so its mount) changes.
#
# Needs root (debootstrap, chroot, mounts): CI runs as root.
# Env: PIPEDREAMER_CACHE   cache root
#      PIPEDREAMER_DEBIAN_MIRROR  Debian mirror (default: the one the host's apt uses)
set -euo pipefail

if (($# == 0)); then
  echo "usage: tools/bazel/run.sh <bazel command> [args...]   (e.g. test //...)" >&2
  exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
checkout=$(cd "$here/../.." && pwd)
cache=${PIPEDREAMER_CACHE:-$HOME/.cache/pipedreamer}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

if ((EUID != 0)); then
  cat >&2 <<EOF
tools/bazel/run.sh: needs root (debootstrap, chroot and bind mounts for the sid root).
Run it as root, e.g.:
  sudo PIPEDREAMER_CACHE=$cache $0 $*
or use a Bazel 8 of your own: bazel $*
EOF
  exit 1
fi
for tool in debootstrap unshare chroot sha256sum; do
  if ! command -v "$tool" >/dev/null; then
    if [[ $tool == debootstrap ]] && command -v apt-get >/dev/null; then
      apt-get install -y -qq --no-install-recommends debootstrap >/dev/null ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
    else
      echo "tools/bazel/run.sh: $tool is missing" >&2
      exit 1
    fi
  fi
done

mirror() {
  if [[ -n ${PIPEDREAMER_DEBIAN_MIRROR:-} ]]; then
    echo "$PIPEDREAMER_DEBIAN_MIRROR"
    return
  fi
  # The first http(s) URI of the host's apt sources that serves Debian's main archive.
  local uri
  uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    grep -oE '(https?://[^ ]+/debian)/?( |$)' | grep -v -- '-security' | head -1 | tr -d ' ')
  echo "${uri:-http://deb.debian.org/debian}"
}

key=$(cat "$here/sid-packages.txt" "$here/sid_root.sh" | sha256sum | cut -c1-16)
base=$cache/bazel-sid
root=$base/$key/root
if [[ ! -e $base/$key/ready ]]; then
  started=$SECONDS
  echo "tools/bazel/run.sh: building the sid root $base/$key (once per package list)" >&2
  rm -rf "${base:?}/${key:?}"
  mkdir -p "$base/$key"
  unshare --mount --propagation private "$here/sid_root.sh" "$root" "$(mirror)" "$here/sid-packages.txt"
  touch "$base/$key/ready"
  # Roots of older package lists are dead weight (~2.5 GB each).
  for old in "$base"/*/; do
    case ${old%/} in
    "$base/$key" | "$base/repository-cache" | "$base/pip-cache") ;;
    *) rm -rf "${old%/}" ;;
    esac
  done
  echo "tools/bazel/run.sh: sid root ready in $((SECONDS - started))s" >&2
fi

output_root=$base/$key/output
mkdir -p "$output_root" "$base/repository-cache" "$base/pip-cache"

# Inside a private mount namespace: mount, then chroot and run Bazel. One run at
# a time (flock): each run lays out the workspace anew. flock -o keeps the lock
# from being inherited by the Bazel server, which outlives the run.
# shellcheck disable=SC2016
exec flock -o "$base/$key/lock" unshare --mount --propagation private /bin/bash -c '
set -euo pipefail
root=$1 checkout=$2 cache=$3 output_root=$4 base=$5 command=$6
shift 6
# The root must be a mount point: runc makes "/" a slave mount before it starts
# a container, which fails on a plain chroot directory.
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --rbind /sys "$root/sys"
for dir in "$checkout" "$cache"; do
  mkdir -p "$root$dir"
  mount --bind "$dir" "$root$dir"
done
# A git worktree keeps its repository elsewhere (.git is a file naming it).
if [[ -f $checkout/.git ]]; then
  gitdir=$(sed -n "s/^gitdir: //p" "$checkout/.git")
  common=$(cd "$gitdir" && cd "$(cat commondir 2>/dev/null || echo .)" && pwd)
  mkdir -p "$root$common"
  mount --bind "$common" "$root$common"
fi
ws=/pipedreamer-ci
rm -rf "${root:?}$ws"
mkdir -p "$root$ws"
shopt -s dotglob nullglob
for entry in "$checkout"/*; do
  name=${entry##*/}
  case $name in MODULE.bazel | MODULE.bazel.lock | bazel-* | .git) continue ;; esac
  ln -s "$entry" "$root$ws/$name"
done
ln -s "$checkout/tools/bazel/ci/MODULE.bazel" "$root$ws/MODULE.bazel"
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp /etc/hosts "$root/etc/hosts"
exec chroot "$root" /usr/bin/env -i \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" CI="${CI:-}" \
  PIPEDREAMER_CACHE="$cache" PIP_CACHE_DIR="$base/pip-cache" \
  SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
  REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
  /bin/bash -c "cd \"\$0\" && exec bazel --bazelrc=tools/bazel/ci/ci.bazelrc --output_user_root=\"\$1\" \"\$2\" \"\${@:3}\"" \
  "$ws" "$output_root" "--host_jvm_args=-Dpipedreamer.checkout=$checkout" \
  "$command" --repository_cache="$base/repository-cache" "$@"
' run.sh "$root" "$checkout" "$cache" "$output_root" "$base" "$@"
