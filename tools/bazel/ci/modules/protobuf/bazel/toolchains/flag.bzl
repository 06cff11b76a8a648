"""A boolean build setting, so .bazelrc's protobuf flags parse under the stand-in."""

def _impl(_ctx):
    return []

bool_setting = rule(
    implementation = _impl,
    build_setting = config.bool(flag = True),
)
