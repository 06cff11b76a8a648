#!/usr/bin/env bash
# "Same layer bytes from both paths", on the host: the layer tars of
# `bazel build //examples/hello:layers` (Bazel 7.7.1 via tools/bazel/run.sh)
# against the layers `./pipedreamer build examples/hello` puts in its image, on
# the base Bazel assembled from deploy/base/lock.json. The plain build gets an
# empty cache, so pip installs the locked wheels itself instead of reusing the
# ones Bazel's image_wheels extension installed. Prints both digests per layer;
# exits 1 when they differ.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
bazel=(tools/bazel/run.sh)
targets=(//examples/hello:layers //deploy/base:image_amd64)

"${bazel[@]}" build "${targets[@]}" >&2
output_base=$("${bazel[@]}" info output_base 2>/dev/null)
execroot=$("${bazel[@]}" info execution_root 2>/dev/null)
mapfile -t files < <("${bazel[@]}" cquery --output=files "set(${targets[*]})" 2>/dev/null)

host_path() {
  case $1 in
  external/*) echo "$output_base/$1" ;;
  *) echo "$execroot/$1" ;;
  esac
}

layers=() base=
for file in "${files[@]}"; do
  case $file in
  *.tar.gz) layers+=("$(host_path "$file")") ;;
  */image_amd64) base=$(host_path "$file") ;;
  esac
done
if ((${#layers[@]} != 3)) || [[ -z $base ]]; then
  echo "same_layers: expected 3 layer tars and a base from Bazel, got: ${files[*]}" >&2
  exit 1
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
digest=$(env -u SOURCE_DATE_EPOCH PIPEDREAMER_CACHE="$scratch/cache" \
  ./pipedreamer --output json build examples/hello --base "$base" --oci-layout "$scratch/hello.oci" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["digest"])')

python3 - "$scratch/hello.oci" "$digest" "${layers[@]}" <<'EOF'
import hashlib
import json
import sys
from pathlib import Path

layout, digest, *tars = sys.argv[1:]


def blob(d: str) -> Path:
    algorithm, hexdigest = d.split(":", 1)
    return Path(layout, "blobs", algorithm, hexdigest)


manifest = json.loads(blob(digest).read_bytes())
plain = [layer["digest"] for layer in manifest["layers"][-3:]]
bazel = ["sha256:" + hashlib.sha256(Path(t).read_bytes()).hexdigest() for t in tars]
same = True
for name, b, p in zip(("wheels", "engine", "workflow"), bazel, plain):
    same &= b == p
    print(f"{name:8} bazel {b}\n{'':8} plain {p}  {'same' if b == p else 'DIFFERENT'}")
sys.exit(0 if same else 1)
EOF
