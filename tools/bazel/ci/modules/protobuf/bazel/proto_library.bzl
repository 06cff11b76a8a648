"""proto_library as protobuf's module exports it: Bazel 7's own rule."""

proto_library = native.proto_library
