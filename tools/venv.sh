#!/usr/bin/env bash
# Creates .venv from requirements/dev.txt, the tests' lock (everything the CLI and
# the tests need; hashes enforced), and generates the protobuf/gRPC Python code;
# does nothing when both are already current.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PIPEDREAMER_PYTHON:-python3}"
lock="$root/requirements/dev.txt"
stamp="$venv/.lock.sha256"
# Every lock counts, not only the one installed: the locks are made together
# (tools/locks/lock.sh), and a .venv older than any of them is stale.
want="$(cat "$root"/requirements/*.txt | sha256sum | cut -d' ' -f1)"

if [[ ! -x "$venv/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "pipedreamer: setting up $venv from requirements/dev.txt (first run only)" >&2
  # The stamp is written last: an interrupted setup is redone on the next run.
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --require-hashes --no-deps --only-binary=:all: -r "$lock" >&2
  echo "$want" > "$stamp"
fi

"$venv/bin/python" "$root/tools/gen_proto.py" --if-stale
