#!/usr/bin/env bash
# Makes the hashed dependency locks, one per audience, with one pinned tool:
#
#   requirements/runtime.txt  what images carry: the closure of what engine/ and proto/ import
#   requirements/cli.txt      the CLI: runtime.in + cli.in, at runtime.txt's versions
#   requirements/dev.txt      tests: cli.in + dev.in, at cli.txt's versions
#                             (tools/venv.sh installs it into .venv; Bazel's @pip hub reads it)
#
# Usage (from anywhere; needs PyPI):
#   tools/locks/lock.sh                       after editing requirements/*.in: every other pin stays
#   tools/locks/lock.sh --upgrade             the newest versions of everything
#   tools/locks/lock.sh -P aiohttp [-P ...]   the newest version of these packages only
#   tools/locks/lock.sh --tool                re-lock pip-tools itself (tools/locks/pip-tools.in)
#
# The tool is pip-tools at the version in tools/locks/pip-tools.txt, installed
# from that file (hashes enforced) into a virtualenv of its own under
# $PIPEDREAMER_CACHE (default ~/.cache/pipedreamer). It runs on Python 3.11
# (PIPEDREAMER_LOCK_PYTHON, default python3): the plain path's Python and the
# oldest the engine supports, so dependencies marked for older Pythons only are
# locked too and the locks' headers do not change with the machine.
#
# PyPI alone: pip's config files and PIP_FIND_LINKS are ignored while locking
# (an index mirror given as PIP_INDEX_URL is used but never written into a
# lock), so a lock installs on a fresh machine. After locking, every runtime
# wheel is installed as `pipedreamer build` installs it, for Python 3.11, 3.12
# and 3.13 on linux/amd64 and linux/arm64 (tools/locks/check_wheels.py): a
# release without wheels for one of them fails here, not in someone's build.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PIPEDREAMER_LOCK_PYTHON:-python3}"
tool_lock="tools/locks/pip-tools.txt"

version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ "$version" != "3.11" ]]; then
  echo "lock.sh: $python is Python $version; the locks are made with Python 3.11 (set PIPEDREAMER_LOCK_PYTHON)" >&2
  exit 2
fi

cd "$root"
export PIP_CONFIG_FILE=/dev/null
unset PIP_FIND_LINKS PIP_NO_INDEX PIP_EXTRA_INDEX_URL
export PIP_DISABLE_PIP_VERSION_CHECK=1

cache="${PIPEDREAMER_CACHE:-$HOME/.cache/pipedreamer}"
venv="$cache/pip-tools/$(sha256sum "$tool_lock" | cut -c1-16)"
if [[ ! -f "$venv/.complete" ]]; then
  echo "lock.sh: installing $tool_lock into $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --require-hashes --no-deps --only-binary=:all: -r "$tool_lock" >&2
  touch "$venv/.complete"
fi

compile() {
  local in="$1" out="$2"
  shift 2
  echo "lock.sh: $in -> $out" >&2
  # --allow-unsafe: setuptools (grpcio-tools needs it) and pip are locked with hashes too.
  # --strip-extras: the locks are valid constraint files (cli.in and dev.in use them as such).
  # --only-binary: every locked version has a wheel (venv.sh and the builder install wheels only).
  # --no-emit-options: no pip option lines at all (no --find-links, index URL or
  # --only-binary): a lock is requirements and hashes only, as every reader
  # (pip, the builder, rules_python's pip.parse) takes it.
  "$venv/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-options \
    --pip-args "--only-binary=:all:" --output-file "$out" "$in" "$@"
}

if [[ "${1:-}" == "--tool" ]]; then
  shift
  CUSTOM_COMPILE_COMMAND="tools/locks/lock.sh --tool" compile tools/locks/pip-tools.in "$tool_lock" "$@"
  exit 0
fi

# In this order: each lock constrains the next (cli.in: -c runtime.txt; dev.in: -c cli.txt).
export CUSTOM_COMPILE_COMMAND="tools/locks/lock.sh"
for audience in runtime cli dev; do
  compile "requirements/$audience.in" "requirements/$audience.txt" "$@"
done

PYTHONPATH="$root" "$venv/bin/python" tools/locks/check_wheels.py requirements/runtime.txt
