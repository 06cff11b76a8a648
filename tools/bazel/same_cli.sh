#!/usr/bin/env bash
# "bazel run //cli:pipedreamer" is the CLI: `validate examples/hello` and
# `deploy examples/github-digest --dry-run` through Bazel (Bazel 7.7.1 via
# tools/bazel/run.sh), and the workflow's own `bazel run
# //examples/github-digest:deploy -- --dry-run`, print exactly what
# ./pipedreamer prints. Exits 1 with a diff when they differ.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

status=0
same() { # name, bazel run args..., ::, pipedreamer args...
  local name=$1
  shift
  local bazel_args=() plain_args=()
  while (($#)) && [[ $1 != :: ]]; do bazel_args+=("$1") && shift; done
  shift
  plain_args=("$@")
  if ! tools/bazel/run.sh run "${bazel_args[@]}" >"$scratch/$name.bazel" 2>"$scratch/$name.log"; then
    echo "same_cli: bazel run ${bazel_args[*]} failed:" >&2
    tail -20 "$scratch/$name.log" >&2
    status=1
    return
  fi
  ./pipedreamer "${plain_args[@]}" >"$scratch/$name.plain"
  if diff -u "$scratch/$name.plain" "$scratch/$name.bazel" >&2; then
    echo "$name: same ($(wc -l <"$scratch/$name.plain") lines)"
  else
    echo "same_cli: bazel run ${bazel_args[*]} differs from ./pipedreamer ${plain_args[*]} (diff above)" >&2
    status=1
  fi
}

same validate //cli:pipedreamer -- validate examples/hello :: validate examples/hello
same deploy //cli:pipedreamer -- deploy examples/github-digest --dry-run :: deploy examples/github-digest --dry-run
same workflow-deploy //examples/github-digest:deploy -- --dry-run :: deploy examples/github-digest --dry-run
exit "$status"
