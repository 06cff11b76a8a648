#!/usr/bin/env bash
# Builds a Debian sid root with Bazel 7.7.1 (bazel-bootstrap) for tools/bazel/run.sh.
#
# Usage: tools/bazel/sid_root.sh DIR MIRROR PACKAGES_FILE
#
# Needs root (debootstrap, chroot). Writes DIR only: the host's apt sources and
# packages are never touched. Steps, with their reasons:
#   * debootstrap --variant=minbase sid: Bazel 7.7.1 in sid needs sid's libc6,
#     libstdc++6 and OpenJDK, which must not be installed into the host.
#   * Acquire::Check-Valid-Until=false: sid's Release file on the mirror may be
#     past its Valid-Until date; the signatures are still checked.
#   * the host's extra CA certificates: HTTPS (PyPI) from inside the root passes
#     through the same proxies the host trusts; update-ca-certificates also feeds
#     Java's trust store, which Bazel's downloader uses.
set -euo pipefail

dir=$1
mirror=$2
packages_file=$3

apt_opts=(-o Acquire::Check-Valid-Until=false -o Acquire::Retries=3 -o APT::Sandbox::User=root)
in_root() { chroot "$dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }

mapfile -t packages < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$packages_file" | tr -s ' \t' '\n' | sed '/^$/d')

debootstrap --variant=minbase sid "$dir" "$mirror" >"$dir.debootstrap.log" 2>&1 || {
  tail -20 "$dir.debootstrap.log" >&2
  exit 1
}

cp /etc/resolv.conf "$dir/etc/resolv.conf"
# No daemons may start inside the root while packages install.
printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
chmod 0755 "$dir/usr/sbin/policy-rc.d"

mount -t proc proc "$dir/proc"
trap 'umount "$dir/proc" 2>/dev/null || true' EXIT
in_root apt-get "${apt_opts[@]}" -qq update
in_root apt-get "${apt_opts[@]}" -y -qq --no-install-recommends install "${packages[@]}" >"$dir.apt.log" 2>&1 || {
  tail -30 "$dir.apt.log" >&2
  exit 1
}

mkdir -p "$dir/usr/local/share/ca-certificates"
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$dir/usr/local/share/ca-certificates/"
fi
in_root update-ca-certificates >/dev/null 2>&1
in_root apt-get clean
rm -rf "$dir/var/lib/apt/lists/"*
