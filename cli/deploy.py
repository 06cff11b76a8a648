"""`pipedreamer deploy [DIR]`: render the workflow's manifests and server-side apply them.

The NetworkPolicy's rule for the API server's service proxy needs the
addresses it connects from: `--apiserver-cidr`, else what the cluster
publishes for `default/kubernetes` (read before anything is applied).
"""

from __future__ import annotations

import argparse

from builder.manifests import DEFAULT_CLUSTER_REGISTRY, DEFAULT_CURL_IMAGE, redact_secrets, to_yaml
from k8s.names import DEFAULT_RUNTIME_CLASS
from builder.secrets_manifest import secret_name
from cli.arguments import cidr, duration
from cli.errors import CommandError
from cli.output import Output
from k8s.apiserver import WHERE as APISERVER_WHERE
from k8s.client import connect, resolve_namespace
from k8s.deploy import DeployOptions, deploy_workflow, plan_deploy

HELP = "deploy a workflow to Kubernetes (server-side apply)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", nargs="?", default=".", help="workflow directory (default: .)")
    parser.add_argument("--dry-run", action="store_true", help="print the manifests as YAML; touch no cluster")
    parser.add_argument("--show-secrets", action="store_true", help="with --dry-run: print Secret values instead of <redacted>")
    parser.add_argument("--cluster-registry", help="registry the cluster pulls from (image: REGISTRY/NAME:VERSION); wins over --registry")
    parser.add_argument("--image", help="full image reference (e.g. with @sha256 digest); overrides the registries")
    parser.add_argument("--replicas", type=int, default=1, help="engine replicas (default: 1)")
    parser.add_argument(
        "--runtime-class",
        default=DEFAULT_RUNTIME_CLASS,
        help=f"pod RuntimeClass (default: {DEFAULT_RUNTIME_CLASS}); '' leaves it out, for clusters without gVisor",
    )
    parser.add_argument("--curl-image", default=DEFAULT_CURL_IMAGE, help="image the cron trigger jobs run curl from")
    parser.add_argument("--wait", action="store_true", help="wait for the rollout to finish, showing progress")
    parser.add_argument("--timeout", type=duration, default=300.0, help="with --wait: give up after this long (default: 5m)")
    parser.add_argument(
        "--force-conflicts", action="store_true", help="take over fields another field manager owns (server-side apply force)"
    )
    parser.add_argument(
        "--apiserver-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="where the API server's service proxy (`pipedreamer run`) connects from, for the NetworkPolicy "
        "(repeatable; default: the addresses in the EndpointSlices of default/kubernetes, read when applying)",
    )


def run(args: argparse.Namespace, out: Output) -> int:
    if args.replicas < 0:
        raise CommandError("--replicas must be 0 or more")
    if args.show_secrets and not args.dry_run:
        raise CommandError("--show-secrets only applies to --dry-run")
    options = DeployOptions(
        image=args.image,
        registry=args.registry,
        cluster_registry=args.cluster_registry,
        replicas=args.replicas,
        runtime_class=args.runtime_class or None,
        curl_image=args.curl_image,
        apiserver_cidrs=tuple(dict.fromkeys(cidr(text, "--apiserver-cidr") for text in args.apiserver_cidr)),
    )
    plan = plan_deploy(args.dir, options)
    spec, image = plan.spec, plan.image
    if not (args.image or args.registry or args.cluster_registry):
        out.info(
            f"note: no --cluster-registry, --registry or --image: the pods pull {image} "
            f"from the in-cluster Zot of deploy/zot (NodePort {DEFAULT_CLUSTER_REGISTRY.rpartition(':')[2]})"
        )
    if plan.secrets and plan.secrets.ignored:
        out.warning(f"{plan.secrets.ignored} is ignored: {plan.secrets.source} takes precedence")

    if args.dry_run:
        namespace = resolve_namespace(args.kubeconfig, args.context, args.namespace)
        if not options.apiserver_cidrs:
            out.info(
                "note: the NetworkPolicy shown has no rule for the API server's service proxy (`pipedreamer run`): "
                f"deploy reads its addresses from {APISERVER_WHERE} when it applies; "
                "pass --apiserver-cidr to render them here"
            )
        objects = plan.render(namespace)
        shown = objects if args.show_secrets else redact_secrets(objects)
        out.result(
            {"namespace": namespace, "image": image, "apiserver_cidrs": list(options.apiserver_cidrs), "manifests": shown},
            to_yaml(shown),
        )
        return 0

    with connect(args.kubeconfig, args.context, args.namespace) as cluster:
        if plan.secrets is None:
            out.info(f"no .secrets/ or .secrets.yaml in {args.dir}: Secret {secret_name(spec.name)!r} is not applied (an existing one stays)")
        if args.wait:
            out.info(f"waiting for deployment/{spec.name} to roll out (timeout {args.timeout:g}s)")
        outcome = deploy_workflow(
            cluster,
            plan,
            force=args.force_conflicts,
            wait=args.wait,
            timeout=args.timeout,
            on_progress=lambda text: out.info(f"  rollout: {text}"),
        )
    out.info(
        f"NetworkPolicy {spec.name!r} admits the API server's service proxy from {', '.join(outcome.apiserver_cidrs)} "
        f"({outcome.apiserver_cidrs_from})"
    )
    lines = [f"{a.kind.lower()}/{a.name} {a.action}" for a in outcome.applied]
    namespace = outcome.namespace
    summary = (
        f"{spec.name} {spec.version} deployed to namespace {namespace!r} ({image})"
        if outcome.changed
        else f"{spec.name} {spec.version} is already deployed as specified in namespace {namespace!r} (no changes)"
    )
    rollout = None
    if outcome.rollout is not None:
        state = outcome.rollout
        rollout = {"done": True, "desired": state.desired, "available": state.available, "updated": state.updated}
        summary += "; rollout complete"
    out.result(
        {
            "workflow": spec.name,
            "version": spec.version,
            "namespace": namespace,
            "image": image,
            "apiserver_cidrs": list(outcome.apiserver_cidrs),
            "changed": outcome.changed,
            "objects": [a.to_dict() for a in outcome.applied],
            "rollout": rollout,
        },
        "\n".join(lines + [summary]),
    )
    return 0
