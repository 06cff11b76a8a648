"""Image build speed and size:

  python -m bench image [--quick] [--json] [--base OCI_LAYOUT] [--deb-cache DIR] [--workflow DIR]
                        [--cold-rounds N] [--rounds N] [--pip-cache empty|host]

* cold build: `builder.build.build_image` with an empty cache (PIPEDREAMER_CACHE) and, by
  default, an empty pip cache: pip downloads and installs the locked wheels, then every
  layer is written (the first build on a new machine). Each cold round has its own
  caches; they must all give the same digest.
* warm rebuild after changing one node: asserts from the result that only the workflow
  layer was rebuilt (wheels and engine came from the cache, with the cold build's
  digests); target under 2 s. Interleaved with a rebuild of unchanged inputs (every
  layer cached, same digest as before): the floor a rebuild cannot go below.
* image size against its base, compressed (what a node pulls) and unpacked; target
  base + less than 40 MB (10^6 bytes) for examples/github-digest.

The base is the real one, assembled by `deploy.base.assemble` from the locked Debian 13
.debs (downloaded with `apt-get download` into a temporary cache unless --deb-cache
names a directory to keep them in), or --base. The workflow is built from a copy in a
temporary directory, so the change never touches the checkout. Ratios (warm / cold,
image / base) come from this one run on this machine; bounded rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from builder.build import BuildResult, build_image, read_workflow
from builder.oci import blob_path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "github-digest"
MB = 1_000_000
WARM_TARGET_S = 2.0
GROWTH_TARGET = 40 * MB
OUR_LAYERS = ("wheels", "engine", "workflow")


def _say(message: str) -> None:
    print(f"bench image: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _env(**values: str | None) -> Iterator[None]:
    """Sets (None: removes) environment variables for the duration; pip inherits them."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _Clock:
    """Timestamps build_image's progress lines, to split a build into phases."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.marks: list[tuple[float, str]] = []

    def __call__(self, message: str) -> None:
        self.marks.append((time.perf_counter() - self.started, message))

    def at(self, prefix: str, last: bool = False) -> float | None:
        found = [t for t, message in self.marks if message.startswith(prefix)]
        return (found[-1] if last else found[0]) if found else None

    def phases(self, total: float) -> dict[str, float]:
        """base read; engine + workflow layers (and the cache checks of a warm build); pip +
        wheels layer (cold only); writing the layout (base blobs copied, config, manifest)."""
        base = self.at("base ") or 0.0
        pip = self.at("installing ")
        first_layer = self.at("layer ") or total
        last_layer = self.at("layer ", last=True) or total
        wrote = self.at("wrote ") or total
        out = {"base read": base, "engine + workflow layers": (pip if pip is not None else first_layer) - base}
        if pip is not None:
            out["pip + wheels layer"] = first_layer - pip
        out["layout write"] = wrote - last_layer
        return out


def _build(workflow: Path, base: Path, out: Path, cache: Path) -> tuple[BuildResult, float, dict[str, float]]:
    clock = _Clock()
    started = time.perf_counter()
    with _env(PIPEDREAMER_CACHE=str(cache)):  # nothing may fall back to the host's cache
        result = build_image(workflow, base, out, cache=cache, progress=clock)
    seconds = time.perf_counter() - started
    return result, seconds, clock.phases(seconds)


def _rebuilt(result: BuildResult) -> list[str]:
    return [layer.name for layer in result.layers if not layer.cached]


def _digests(result: BuildResult) -> dict[str, str]:
    return {layer.name: layer.digest for layer in result.layers}


def _unpacked_size(path: Path) -> int:
    """A gzip member's uncompressed size from its trailer (ISIZE; layers are < 4 GiB)."""
    with open(path, "rb") as file:
        file.seek(-4, os.SEEK_END)
        return int.from_bytes(file.read(4), "little")


def _sizes(result: BuildResult) -> dict:
    layout = result.layout
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob_path(layout, index["manifests"][0]["digest"]).read_bytes())
    layers = manifest["layers"]
    ours = {layer.name: layer.digest for layer in result.layers}
    base_layers = layers[: len(layers) - len(ours)]
    if [d["digest"] for d in layers[len(base_layers):]] != [ours[name] for name in OUR_LAYERS]:
        raise AssertionError(f"manifest layers are not base + {', '.join(OUR_LAYERS)}: {layers}")
    base_unpacked = sum(_unpacked_size(blob_path(layout, d["digest"])) for d in base_layers)
    per_layer = {
        name: {"compressed": next(d["size"] for d in layers if d["digest"] == digest),
               "unpacked": _unpacked_size(blob_path(layout, digest))}
        for name, digest in ours.items()
    }  # fmt: skip
    ours_unpacked = sum(layer["unpacked"] for layer in per_layer.values())
    return {
        "base": {"compressed": result.base_size, "unpacked": base_unpacked, "layers": len(base_layers)},
        "image": {"compressed": result.image_size, "unpacked": base_unpacked + ours_unpacked},
        "growth": {"compressed": result.image_size - result.base_size, "unpacked": ours_unpacked},
        "layers": per_layer,
    }


def _change_node(node: Path, round_: int) -> None:
    node.write_text(node.read_text() + f"\n# bench image: change {round_}\n")


def measure(workflow_src: Path, base: Path, root: Path, cold_rounds: int, rounds: int, pip_cache: str) -> dict:
    workflow = root / "workflow" / workflow_src.name
    shutil.copytree(workflow_src, workflow, ignore=shutil.ignore_patterns("__pycache__"))
    node = workflow / read_workflow(workflow).node_paths[0]

    cold: list[dict] = []
    warm_cache = None
    first: BuildResult | None = None
    for round_ in range(cold_rounds):
        cache, out = root / f"cache-cold-{round_}", root / f"out-cold-{round_}"
        _say(f"cold build {round_ + 1}/{cold_rounds} (empty cache{', empty pip cache' if pip_cache == 'empty' else ''}) …")
        pip_env = {"PIP_CACHE_DIR": str(root / f"pip-cache-{round_}"), "PIP_NO_CACHE_DIR": None} if pip_cache == "empty" else {}
        with _env(**pip_env):
            result, seconds, phases = _build(workflow, base, out, cache)
        if _rebuilt(result) != list(OUR_LAYERS):
            raise AssertionError(f"cold build {round_}: expected every layer built, cached were "
                                 f"{[n for n in OUR_LAYERS if n not in _rebuilt(result)]}")  # fmt: skip
        if first is not None and result.digest != first.digest:
            raise AssertionError(f"cold builds from empty caches differ: {first.digest} vs {result.digest}")
        cold.append({"seconds": seconds, "phases": phases, "digest": result.digest})
        if first is None:
            first, warm_cache = result, cache  # the warm rebuilds reuse the first cold build's cache
        else:
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
        if pip_cache == "empty":
            shutil.rmtree(root / f"pip-cache-{round_}", ignore_errors=True)
    assert first is not None and warm_cache is not None
    sizes = _sizes(first)

    changed: list[dict] = []
    unchanged: list[dict] = []
    previous = first
    for round_ in range(rounds):
        # Alternate which kind goes first, so machine drift hits both alike.
        kinds = ("changed", "unchanged") if round_ % 2 == 0 else ("unchanged", "changed")
        for kind in kinds:
            out = root / f"out-warm-{round_}-{kind}"
            if kind == "changed":
                _change_node(node, round_)
            result, seconds, phases = _build(workflow, base, out, warm_cache)
            rebuilt = _rebuilt(result)
            if kind == "changed":
                # The target, asserted from the build's own report.
                if rebuilt != ["workflow"]:
                    raise AssertionError(f"warm rebuild {round_}: rebuilt {rebuilt}, expected only ['workflow']")
                for name in ("wheels", "engine"):
                    if _digests(result)[name] != _digests(first)[name]:
                        raise AssertionError(f"warm rebuild {round_}: the {name} layer changed")
                if _digests(result)["workflow"] == _digests(previous)["workflow"] or result.digest == previous.digest:
                    raise AssertionError(f"warm rebuild {round_}: changing {node.name} did not change the workflow layer")
                changed.append({"seconds": seconds, "phases": phases, "rebuilt": rebuilt,
                                "workflow_layer": _digests(result)["workflow"]})  # fmt: skip
            else:
                if rebuilt or result.digest != previous.digest:
                    raise AssertionError(f"rebuild of unchanged inputs {round_}: rebuilt {rebuilt}, "
                                         f"digest {result.digest} vs {previous.digest}")  # fmt: skip
                unchanged.append({"seconds": seconds, "phases": phases})
            previous = result
            shutil.rmtree(out, ignore_errors=True)

    cold_s = statistics.median(c["seconds"] for c in cold)
    changed_s = statistics.median(c["seconds"] for c in changed)
    unchanged_s = statistics.median(c["seconds"] for c in unchanged)
    return {
        "workflow": str(workflow_src),
        "changed_node": str(node.relative_to(workflow)),
        "pip_cache": pip_cache,
        "digest": first.digest,
        "python": first.python_version,
        "cold": {"median_s": cold_s, "rounds": cold, "same_digest": len({c["digest"] for c in cold}) == 1},
        "warm_changed": {"median_s": changed_s, "best_s": min(c["seconds"] for c in changed),
                         "max_s": max(c["seconds"] for c in changed), "rounds": changed,
                         "rebuilt": sorted({n for c in changed for n in c["rebuilt"]})},  # fmt: skip
        "warm_unchanged": {"median_s": unchanged_s, "rounds": unchanged},
        "ratio_warm_cold": changed_s / cold_s,
        "ratio_warm_unchanged": changed_s / unchanged_s,
        "sizes": sizes,
        "ratio_image_base": sizes["image"]["compressed"] / sizes["base"]["compressed"],
    }


def _phases(phases: list[dict[str, float]]) -> str:
    names = list(phases[0])
    return ", ".join(f"{name} {_s(statistics.median(p[name] for p in phases))}" for name in names)


def _mb(size: int) -> str:
    return f"{size / MB:.1f} MB" if size >= MB else f"{size / 1000:.1f} kB"


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.0f} ms"


def _table(data: dict, base_seconds: float | None) -> list[str]:
    cold, changed, unchanged, sizes = data["cold"], data["warm_changed"], data["warm_unchanged"], data["sizes"]
    ok = lambda good: "ok  " if good else "MISS"
    lines = [
        f"image build: {Path(data['workflow']).name} on the assembled Debian 13 base, linux/amd64, Python {data['python']} "
        f"({os.cpu_count()} CPUs, kernel {platform.release()})",
        f"  digest {data['digest']}",
    ]
    if base_seconds is not None:
        lines.append(f"  (base assembled in {base_seconds:.1f} s, not part of any figure)")
    lines += [
        "",
        f"  {'build':<34} {'median':>9} {'rounds':>7}  layers rebuilt",
        f"  {'cold (empty caches)':<34} {_s(cold['median_s']):>9} {len(cold['rounds']):>7}  wheels, engine, workflow"
        f"{' (same digest each time)' if cold['same_digest'] and len(cold['rounds']) > 1 else ''}",
        f"  {'warm, one node changed':<34} {_s(changed['median_s']):>9} {len(changed['rounds']):>7}  "
        f"{', '.join(changed['rebuilt'])} (best {_s(changed['best_s'])}, worst {_s(changed['max_s'])})",
        f"  {'warm, nothing changed (the floor)':<34} {_s(unchanged['median_s']):>9} {len(unchanged['rounds']):>7}  none",
        "",
        f"  cold phases:  {_phases([r['phases'] for r in cold['rounds']])}",
        f"  warm phases:  {_phases([r['phases'] for r in changed['rounds']])}",
        "",
        f"  {'size':<22} {'compressed':>12} {'unpacked':>12}",
        f"  {'base':<22} {_mb(sizes['base']['compressed']):>12} {_mb(sizes['base']['unpacked']):>12}",
    ]
    for name in OUR_LAYERS:
        layer = sizes["layers"][name]
        lines.append(f"  {'+ ' + name + ' layer':<22} {_mb(layer['compressed']):>12} {_mb(layer['unpacked']):>12}")
    lines += [
        f"  {'image':<22} {_mb(sizes['image']['compressed']):>12} {_mb(sizes['image']['unpacked']):>12}",
        "",
        f"  {ok(changed['rebuilt'] == ['workflow'])} warm rebuild rebuilds only the workflow layer (asserted every round)",
        f"  {ok(changed['median_s'] < WARM_TARGET_S)} warm rebuild after one node changed: {_s(changed['median_s'])} median "
        f"(target < 2 s); {data['ratio_warm_cold']:.1%} of the cold build, {data['ratio_warm_unchanged']:.2f}x a rebuild of unchanged inputs",
        f"  {ok(sizes['growth']['compressed'] < GROWTH_TARGET)} image = base + {_mb(sizes['growth']['compressed'])} compressed "
        f"(target < 40 MB; + {_mb(sizes['growth']['unpacked'])} unpacked): {data['ratio_image_base']:.2f}x the base",
        f"  cold builds used {'an empty pip cache (wheels downloaded from PyPI)' if data['pip_cache'] == 'empty' else 'the host pip cache'}; "
        "their time depends on the network",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench image", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run, noisier figures)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    parser.add_argument("--base", type=Path, help="an OCI layout to build on (default: assemble the Debian 13 base now)")
    parser.add_argument("--deb-cache", type=Path, help="where to keep the base's .debs between runs (default: a temporary directory)")
    parser.add_argument("--workflow", type=Path, default=EXAMPLE, help="the workflow to build (default: examples/github-digest)")
    parser.add_argument("--cold-rounds", type=int, help="cold builds, each from empty caches (default: 2; --quick: 1)")
    parser.add_argument("--rounds", type=int, help="warm rebuilds of each kind (default: 5; --quick: 2)")
    parser.add_argument("--pip-cache", choices=("empty", "host"), default="empty",
                        help="cold builds with an empty pip cache (default) or the host's")  # fmt: skip
    args = parser.parse_args(argv)
    cold_rounds = max(1, min(args.cold_rounds or (1 if args.quick else 2), 5))
    rounds = max(1, min(args.rounds or (2 if args.quick else 5), 50))
    base_seconds = None
    with tempfile.TemporaryDirectory(prefix="pipedreamer-bench-image-") as tmp:
        root = Path(tmp)
        base = args.base
        if base is None:
            from deploy.base.assemble import assemble

            base = root / "base"
            deb_cache = args.deb_cache or root / "deb-cache"
            _say(f"assembling the base from the locked .debs (cache {deb_cache}) …")
            started = time.perf_counter()
            assemble(base, architectures=("amd64",), cache=deb_cache, progress=lambda m: _say(f"base: {m}"))
            base_seconds = time.perf_counter() - started
        data = measure(args.workflow.resolve(), base, root, cold_rounds, rounds, args.pip_cache)
    data["base_assembly_s"] = base_seconds
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print("\n".join(_table(data, base_seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
