"""oci_image, oci_push and oci_load that say why they cannot run here.

rules_oci is in no Debian package, and neither the Bazel Central Registry nor
GitHub is reachable from CI. Each macro makes a target tagged `manual`, so
`bazel test //...` skips it; building or running one fails with this reason.
Users' MODULE.bazel uses the real rules_oci.
"""

_MESSAGE = "%s: rules_oci is not available under the CI overlay (tools/bazel/ci/README.md); use Bazel 8 with the MODULE.bazel of the repository"

def _unavailable_impl(ctx):
    script = ctx.actions.declare_file(ctx.label.name + ".unavailable.sh")
    ctx.actions.write(
        script,
        "#!/bin/sh\necho '%s' >&2\nexit 1\n" % (_MESSAGE % ctx.label),
        is_executable = True,
    )
    fail_marker = ctx.actions.declare_file(ctx.label.name + ".unavailable")
    ctx.actions.run_shell(
        outputs = [fail_marker],
        command = "echo '%s' >&2; exit 1" % (_MESSAGE % ctx.label),
        mnemonic = "RulesOciUnavailable",
    )
    return [DefaultInfo(executable = script, files = depset([fail_marker]))]

_unavailable = rule(
    implementation = _unavailable_impl,
    executable = True,
)

def _stand_in(name, tags = None, visibility = None, testonly = None, **_kwargs):
    _unavailable(
        name = name,
        tags = (tags or []) + ["manual"],
        visibility = visibility,
        testonly = testonly,
    )

def oci_image(name, **kwargs):
    _stand_in(name, **kwargs)

def oci_push(name, **kwargs):
    _stand_in(name, **kwargs)

def oci_load(name, **kwargs):
    _stand_in(name, **kwargs)
