#!/usr/bin/env bash
# Sets up everything the tests start for real, on a fresh Debian machine with
# Python, Go and Node: each step checks first and does its work only when
# something is missing, saying what and how long it took.
#
#   1. Debian packages: nats-server, docker-registry, runc/umoci, openssl,
#      htpasswd, iproute2, libseccomp2, qemu-user-static, iptables, gcc, and
#      the linter shellcheck (needs root: when not root, it prints the apt-get
#      line to run and stops)
#   2. buildifier, from npm, into .tools/
#   3. the Go-built Kubernetes tools: the control plane (kube-apiserver,
#      kube-controller-manager, etcd), kube-score, crane, and a node's parts
#      (kubelet, kube-scheduler, kube-proxy, containerd, CNI plugins, gVisor's
#      runsc and shim, CoreDNS), cached in ${PIPEDREAMER_CACHE:-~/.cache/pipedreamer}/kube
#      (cold: 20-30 min on 2 cores; warm: under a second)
#   4. .venv from the hashed locks, and the generated protobuf modules
#
# ./test runs it before pytest; .ci/run runs ./test. Run it alone to prepare a machine.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PIPEDREAMER_CACHE="${PIPEDREAMER_CACHE:-$HOME/.cache/pipedreamer}"

# Real servers and tools the tests start: NATS, an OCI registry, runc/umoci,
# wrk for benchmarks, shellcheck for deploy scripts, htpasswd for registry auth.
# qemu-user-static runs the arm64 base's own ldconfig when assembling that base.
# The test node (tests/kube_node.py): iptables for kube-proxy (inside the node's
# own network namespace), util-linux's nsenter, gcc and libc6-dev for the static
# pause binary, patch for the gVisor shim's patch (tools/kube/build.sh).
PACKAGES=(nats-server docker-registry runc umoci wrk shellcheck apache2-utils iproute2 openssl
  libseccomp2 ca-certificates qemu-user-static binfmt-support iptables util-linux gcc libc6-dev patch)

say() { printf 'setup: %s\n' "$*" >&2; }

timed() {  # timed WHAT COMMAND...: runs it, then says how long WHAT took
  local what=$1 start=$SECONDS
  shift
  "$@"
  say "$what: done in $((SECONDS - start))s"
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  if ((EUID != 0)); then
    say "missing Debian packages: ${missing[*]}"
    say "installing them needs root; run:"
    say "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}"
    say "(or: sudo $root/tools/setup.sh), then run the tests again"
    exit 1
  fi
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  timed "Debian packages" bash -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null' _ "${missing[@]}"
}

install_buildifier() {
  if ! "$root/tools/install_buildifier.sh" --check 2>/dev/null; then
    say "installing buildifier from npm"
    timed "buildifier" "$root/tools/install_buildifier.sh"
  fi
}

build_kube_tools() {
  # build.sh is cached and says itself what it builds; the summary line only when it built.
  local start=$SECONDS
  bash "$root/tools/kube/build.sh" >/dev/null
  ((SECONDS - start < 2)) || say "Go-built Kubernetes tools and node parts: done in $((SECONDS - start))s"
}

install_packages
install_buildifier
build_kube_tools
"$root/tools/venv.sh"
