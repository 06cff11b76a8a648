"""Static checks of the Bazel build files, run by pytest instead of Bazel."""
