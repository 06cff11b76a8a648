"""Running real Bazel (Debian sid's 7.7.1) on this checkout: tools/bazel/run.sh."""
