#!/usr/bin/env bash
# Install gVisor (runsc + containerd-shim-runsc-v1) on a k0s node and register
# it with k0s's containerd as the runtime handler `runsc`. Any other containerd
# that imports a drop-in directory (`imports = ["/etc/containerd/conf.d/*.toml"]`)
# works the same with CONTAINERD_CONFIG_D (tests/kube_node.py runs it so).
#
#   sudo bash deploy/gvisor/install.sh            # on every worker node
#   kubectl apply -f deploy/gvisor/runtimeclass.yaml
#   kubectl apply -f deploy/gvisor/test-pod.yaml  # then: kubectl logs gvisor-test
#
# Idempotent: binaries are replaced only when their sha512 differs from the
# release's, and the containerd drop-in is rewritten only when its content
# would change. Running it twice changes nothing the second time.
#
# Environment:
#   GVISOR_RELEASE     release to install (default 20250715.0, so every node set up
#                      from this script runs the same runsc); "latest" or another
#                      dated release such as 20250707.0
#   GVISOR_BIN_DIR     offline install: a directory that already holds runsc,
#                      containerd-shim-runsc-v1 and their .sha512 files
#   INSTALL_DIR        where the binaries go (default /usr/local/bin)
#   K0S_CONTAINERD_D   k0s's containerd drop-in directory (default /etc/k0s/containerd.d)
#   CONTAINERD_CONFIG_D  the drop-in directory of another containerd (default K0S_CONTAINERD_D)
#   CONTAINERD         containerd binary used to pick the config format
#                      (default /var/lib/k0s/bin/containerd)
#   RUNSC_CONFIG       a containerd-shim-runsc-v1 config file (runsc's path, root,
#                      [runsc_config] flags) to name as the handler's ConfigPath;
#                      default none: the shim runs `runsc` from containerd's PATH
#   RESTART_K0S=1      restart the k0s service when the drop-in changed (k0s
#                      normally picks drop-ins up on its own)
set -euo pipefail

GVISOR_RELEASE=${GVISOR_RELEASE:-20250715.0}
GVISOR_BIN_DIR=${GVISOR_BIN_DIR:-}
INSTALL_DIR=${INSTALL_DIR:-/usr/local/bin}
K0S_CONTAINERD_D=${K0S_CONTAINERD_D:-/etc/k0s/containerd.d}
CONTAINERD_CONFIG_D=${CONTAINERD_CONFIG_D:-$K0S_CONTAINERD_D}
RUNSC_CONFIG=${RUNSC_CONFIG:-}
CONTAINERD=${CONTAINERD:-/var/lib/k0s/bin/containerd}
RESTART_K0S=${RESTART_K0S:-0}
BINARIES=(runsc containerd-shim-runsc-v1)

log() { printf 'gvisor-install: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 is required but not installed"
}

gvisor_arch() {
    case "$(uname -m)" in
        x86_64 | amd64) echo x86_64 ;;
        aarch64 | arm64) echo aarch64 ;;
        *) die "gVisor supports x86_64 and aarch64 only, this node is $(uname -m)" ;;
    esac
}

# fetch URL DEST: download to DEST (curl or wget), failing on HTTP errors.
fetch() {
    if command -v curl >/dev/null 2>&1; then
        curl --fail --silent --show-error --location --retry 3 --output "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget --quiet --tries=3 --output-document="$2" "$1"
    else
        die "curl or wget is needed to download gVisor (or set GVISOR_BIN_DIR for an offline install)"
    fi
}

# expected_sha512 FILE.sha512: the hash part of a "<hash>  <name>" line.
expected_sha512() {
    local hash
    read -r hash _ <"$1" || true
    [[ $hash =~ ^[0-9a-f]{128}$ ]] || die "$1 does not hold a sha512 hash"
    printf '%s\n' "$hash"
}

sha512_of() {
    sha512sum "$1" | cut -d' ' -f1
}

# stage_binaries DIR: put each binary and its .sha512 into DIR.
stage_binaries() {
    local dir=$1 name url
    if [[ -n $GVISOR_BIN_DIR ]]; then
        for name in "${BINARIES[@]}"; do
            [[ -f $GVISOR_BIN_DIR/$name && -f $GVISOR_BIN_DIR/$name.sha512 ]] ||
                die "GVISOR_BIN_DIR=$GVISOR_BIN_DIR lacks $name or $name.sha512"
            cp "$GVISOR_BIN_DIR/$name" "$GVISOR_BIN_DIR/$name.sha512" "$dir/"
        done
        return
    fi
    url="https://storage.googleapis.com/gvisor/releases/release/${GVISOR_RELEASE}/$(gvisor_arch)"
    for name in "${BINARIES[@]}"; do
        fetch "$url/$name.sha512" "$dir/$name.sha512"
        # Skip the download when the installed binary is already this release's.
        if [[ -x $INSTALL_DIR/$name ]] &&
            [[ "$(sha512_of "$INSTALL_DIR/$name")" == "$(expected_sha512 "$dir/$name.sha512")" ]]; then
            continue
        fi
        log "downloading $name ($GVISOR_RELEASE, $(gvisor_arch))"
        fetch "$url/$name" "$dir/$name"
    done
}

# install_binaries DIR: verify, then atomically replace what differs.
install_binaries() {
    local dir=$1 name want
    mkdir -p "$INSTALL_DIR"
    for name in "${BINARIES[@]}"; do
        want=$(expected_sha512 "$dir/$name.sha512")
        if [[ -x $INSTALL_DIR/$name && "$(sha512_of "$INSTALL_DIR/$name")" == "$want" ]]; then
            log "$INSTALL_DIR/$name is up to date"
            continue
        fi
        [[ -f $dir/$name ]] || die "$name was not downloaded"
        [[ "$(sha512_of "$dir/$name")" == "$want" ]] || die "$name does not match its sha512; refusing to install it"
        install -m 0755 "$dir/$name" "$INSTALL_DIR/.$name.new"
        mv -f "$INSTALL_DIR/.$name.new" "$INSTALL_DIR/$name"
        log "installed $INSTALL_DIR/$name"
    done
}

# The drop-in registers the handler the RuntimeClass names (handler: runsc):
#   containerd 2.x, config version 3: [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runsc]
#   containerd 1.x, config version 2: [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]
dropin_content() {
    local version="" config_version=3 table='plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runsc'
    if [[ -x $CONTAINERD ]]; then
        version=$("$CONTAINERD" --version 2>/dev/null || true)
    fi
    if [[ $version =~ [[:space:]]v?1\.[0-9]+ ]]; then
        config_version=2
        table='plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc'
    fi
    printf '# Managed by pipedreamer deploy/gvisor/install.sh: gVisor as runtime handler "runsc".\n'
    printf 'version = %s\n\n[%s]\n  runtime_type = "io.containerd.runsc.v1"\n' "$config_version" "$table"
    if [[ -n $RUNSC_CONFIG ]]; then
        printf '\n[%s.options]\n  TypeUrl = "io.containerd.runsc.v1.options"\n  ConfigPath = "%s"\n' \
            "$table" "$RUNSC_CONFIG"
    fi
}

# write_dropin: returns 0 when the file changed, 1 when it was already right.
write_dropin() {
    local target=$CONTAINERD_CONFIG_D/gvisor.toml tmp
    mkdir -p "$CONTAINERD_CONFIG_D"
    tmp=$(mktemp "$CONTAINERD_CONFIG_D/.gvisor.toml.XXXXXX")
    dropin_content >"$tmp"
    if [[ -f $target ]] && cmp -s "$tmp" "$target"; then
        rm -f "$tmp"
        log "$target is up to date"
        return 1
    fi
    chmod 0644 "$tmp"
    mv -f "$tmp" "$target"
    log "wrote $target"
    return 0
}

restart_k0s() {
    local unit
    for unit in k0sworker k0scontroller; do
        if systemctl is-active --quiet "$unit" 2>/dev/null; then
            log "restarting $unit"
            systemctl restart "$unit"
            return
        fi
    done
    log "no active k0s systemd unit found; restart k0s yourself"
}

main() {
    [[ $(id -u) -eq 0 ]] || die "run as root (sudo bash $0)"
    need sha512sum
    need install
    [[ -z $RUNSC_CONFIG || -f $RUNSC_CONFIG ]] || die "RUNSC_CONFIG=$RUNSC_CONFIG does not exist"
    [[ -d /etc/k0s || -x $CONTAINERD ]] ||
        die "this does not look like a k0s node (no /etc/k0s, no $CONTAINERD); for another containerd, register runtime_type io.containerd.runsc.v1 as handler runsc yourself"

    local work
    work=$(mktemp -d)
    # shellcheck disable=SC2064 # expand $work now: it is local to main
    trap "rm -rf '$work'" EXIT
    stage_binaries "$work"
    install_binaries "$work"
    "$INSTALL_DIR/runsc" --version >&2 || die "$INSTALL_DIR/runsc does not run on this node"

    if write_dropin; then
        if [[ $CONTAINERD_CONFIG_D != "$K0S_CONTAINERD_D" ]]; then
            log "restart containerd to load $CONTAINERD_CONFIG_D/gvisor.toml (if it is running)"
        elif [[ $RESTART_K0S == 1 ]]; then
            restart_k0s
        else
            log "k0s picks up $K0S_CONTAINERD_D on its own; if pods with runtimeClassName gvisor fail with 'no runtime for \"runsc\"', rerun with RESTART_K0S=1"
        fi
    fi
    log "done; now: kubectl apply -f deploy/gvisor/runtimeclass.yaml"
}

main "$@"
