"""`pipedreamer deploy [DIR]`: render the workflow's manifests and server-side apply them.

The NetworkPolicy's rule for the API server's service proxy needs the
addresses it connects from: `--apiserver-cidr`, else what the cluster
publishes for `default/kubernetes` (read before anything is applied).
`--ingress-host` adds an Ingress for the webhook paths (only those), and a
NetworkPolicy rule for the ingress controller's pods (`--ingress-namespace`,
`--ingress-pod-label`).
"""

from __future__ import annotations

import argparse

import re

from builder.manifests import DEFAULT_CLUSTER_REGISTRY, DEFAULT_CURL_IMAGE, IngressOptions, redact_secrets, to_yaml, webhook_paths
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
    parser.add_argument("--ingress-host", help="expose the webhook triggers' paths (only those) through an Ingress for this host")
    parser.add_argument(
        "--ingress-namespace",
        help="with --ingress-host: the namespace of the ingress controller's pods, which the NetworkPolicy admits on HTTP",
    )
    parser.add_argument(
        "--ingress-pod-label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --ingress-host: only the controller pods with this label (repeatable; default: every pod of --ingress-namespace)",
    )
    parser.add_argument("--ingress-class", default="", help="with --ingress-host: the Ingress's ingressClassName (default: the cluster's default class)")
    parser.add_argument("--ingress-tls-secret", default="", help="with --ingress-host: a TLS Secret for the host (senders such as GitHub want https)")


_LABEL_KEY_RE = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def ingress_options(args: argparse.Namespace) -> IngressOptions | None:
    """The --ingress-* flags, checked; None without --ingress-host."""
    if not args.ingress_host:
        given = [f for f, v in (("--ingress-namespace", args.ingress_namespace), ("--ingress-pod-label", args.ingress_pod_label),
                                ("--ingress-class", args.ingress_class), ("--ingress-tls-secret", args.ingress_tls_secret)) if v]  # fmt: skip
        if given:
            raise CommandError(f"{', '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} with --ingress-host")
        return None
    if not args.ingress_namespace:
        raise CommandError(
            "--ingress-host needs --ingress-namespace: the namespace of the ingress controller's pods "
            "(e.g. ingress-nginx), which the workflow's NetworkPolicy must admit for the Ingress to reach the engine"
        )
    labels = []
    for text in args.ingress_pod_label:
        key, sep, value = text.partition("=")
        if not sep or not _LABEL_KEY_RE.match(key) or not _LABEL_VALUE_RE.match(value):
            raise CommandError(f"--ingress-pod-label {text!r}: expected KEY=VALUE, a Kubernetes label (e.g. app.kubernetes.io/name=ingress-nginx)")
        labels.append((key, value))
    return IngressOptions(
        host=args.ingress_host.strip().lower(),
        controller_namespace=args.ingress_namespace,
        controller_labels=tuple(labels),
        ingress_class=args.ingress_class,
        tls_secret=args.ingress_tls_secret,
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
        ingress=ingress_options(args),
    )
    plan = plan_deploy(args.dir, options)
    for note in plan.notes:
        out.warning(note)
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
    if options.ingress is not None:
        scheme = "https" if options.ingress.tls_secret else "http"
        out.info("webhooks exposed: " + ", ".join(f"{scheme}://{options.ingress.host}{path}" for path in webhook_paths(spec)))
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
