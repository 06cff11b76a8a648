"""Where each kind of access may go: explicit read roots, real and minimal paths, ancestor lookup."""

from __future__ import annotations

import os
from pathlib import Path

from engine import sandbox
from engine.sandbox import PermissionPolicy
from engine.sandbox import roots as sandbox_roots


def test_interpreter_paths_cover_stdlib_site_packages_and_the_engine():
    paths = sandbox_roots.interpreter_read_paths()
    engine_dir = str(Path(sandbox.__file__).resolve().parent)
    assert any(engine_dir == p or engine_dir.startswith(p + "/") for p in paths)
    import proto

    proto_dir = str(Path(proto.__file__).parent)  # the generated modules import from here, under Bazel too
    assert any(proto_dir == p or proto_dir.startswith(p + "/") for p in paths), (proto_dir, paths)
    assert any(os.path.dirname(os.__file__).startswith(p) for p in paths)
    import pytest as loaded  # a third-party package already imported

    assert any(os.path.dirname(loaded.__file__).startswith(p) for p in paths)


def test_roots_are_real_minimal_and_keep_writable_out_of_execution(tmp_path: Path):
    app, scratch = tmp_path / "app", tmp_path / "scratch"
    (app / "sub").mkdir(parents=True)
    scratch.mkdir()
    link = tmp_path / "link"
    link.symlink_to(app)
    roots = sandbox_roots.effective_roots(PermissionPolicy(allow_read=(str(link), str(app / "sub")), allow_write=(str(scratch),)), ())
    assert str(app) in roots.read and str(app / "sub") not in roots.read and str(link) not in roots.read
    assert roots.write == tuple(sorted((str(scratch), os.path.realpath("/dev/null"))))
    assert roots.run == ()
    with_run = sandbox_roots.effective_roots(
        PermissionPolicy(allow_read=(str(app),), allow_write=(str(scratch),), allow_run=True), ()
    )
    assert any(sandbox_roots.inside(os.path.realpath("/usr/bin/true"), r) for r in with_run.run)
    assert any(sandbox_roots.inside(str(app), r) for r in with_run.run)
    assert not any(sandbox_roots.inside(str(scratch), r) for r in with_run.run)


def test_root_set_matches_whole_path_components_only():
    roots = sandbox_roots.RootSet(["/app", "/usr/lib", "/dev/null"])
    assert roots.covers("/app") and roots.covers("/app/nodes/x.py") and roots.covers("/usr/lib/python3.13/os.py")
    assert roots.covers("/dev/null")
    assert not roots.covers("/application/x") and not roots.covers("/usr") and not roots.covers("/")
    assert not roots.covers("/dev/nullx") and not roots.covers("/etc/shadow")
    assert sandbox_roots.RootSet(["/"]).covers("/etc/shadow")
    assert not sandbox_roots.RootSet([]).covers("/app")


def test_realpath_agrees_with_os_path_realpath(tmp_path: Path):
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "sub" / "f").write_text("x")
    (tmp_path / "hop").symlink_to(tmp_path / "real")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "f")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases = [
        tmp_path / "hop" / "sub" / "f",  # through a symlinked directory
        tmp_path / "hop" / "sub" / "new-file",  # does not exist yet: the slow walk
        tmp_path / "dangling",
        fifo,  # O_PATH never blocks on a FIFO
        Path("/etc/passwd"),
        Path("/proc/self/fd/0"),  # a magic link: whatever fd 0 is, the answer matches
    ]
    for path in cases:
        assert sandbox_roots.realpath(str(path)) == os.path.realpath(path), path
