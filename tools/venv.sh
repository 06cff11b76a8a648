#!/usr/bin/env bash
# Creates .venv from requirements_lock.txt (hashes enforced) and generates the
# protobuf/gRPC Python code; does nothing when both are already current.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PIPEDREAMER_PYTHON:-python3}"
stamp="$venv/.lock.sha256"
want="$(cat "$root/requirements_lock.txt" | sha256sum | cut -d' ' -f1)"

if [[ ! -x "$venv/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "pipedreamer: setting up $venv from requirements_lock.txt (first run only)" >&2
  # The stamp is written last: an interrupted setup is redone on the next run.
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --require-hashes --no-deps --only-binary=:all: -r "$root/requirements_lock.txt" >&2
  echo "$want" > "$stamp"
fi

"$venv/bin/python" "$root/tools/gen_proto.py" --if-stale
