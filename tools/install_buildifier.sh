#!/usr/bin/env bash
# Installs buildifier from the npm registry (the package bundles the binaries)
# into .tools/, so Bazel files can be linted on machines without Bazel.
# --check: exit 0 if the pinned version is already there, 1 otherwise.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="8.2.1"
bin="$root/.tools/node_modules/.bin/buildifier"
if [[ -x "$bin" ]] && [[ "$("$bin" --version 2>/dev/null)" == *"$version"* ]]; then
  exit 0
fi
[[ ${1:-} != --check ]] || exit 1
npm install --silent --no-audit --no-fund --prefix "$root/.tools" "@bazel/buildifier@$version" >&2
"$bin" --version >&2
