"""Where the API server's service proxy connects from: the addresses it publishes for `default/kubernetes`.

Every API server writes its own address into the EndpointSlices of the
`kubernetes` Service in `default`; the workflow's NetworkPolicy admits them on
the engine's HTTP port so that `pipedreamer run` (POST …/services/NAME:8080/proxy/run)
gets through.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Mapping

from k8s import kinds
from k8s.client import Cluster
from k8s.errors import ClusterError

APISERVER_SERVICE_NAMESPACE = "default"
APISERVER_SERVICE = "kubernetes"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SHOW_COMMAND = f"kubectl get endpointslices -n {APISERVER_SERVICE_NAMESPACE} -l {SERVICE_NAME_LABEL}={APISERVER_SERVICE}"
WHERE = f"the EndpointSlices of Service {APISERVER_SERVICE_NAMESPACE}/{APISERVER_SERVICE}"


def host_cidr(address: str) -> str:
    """One address as a CIDR of just itself: `192.0.2.1/32`, `2001:db8::1/128`."""
    ip = ipaddress.ip_address(address)
    return f"{ip.compressed}/{ip.max_prefixlen}"


def cidrs_from_slices(slices: Iterable[Mapping]) -> tuple[str, ...]:
    """Every IP address in the slices, each as a host CIDR; IPv4 before IPv6, sorted, once each."""
    found = set()
    for endpoint_slice in slices:
        if endpoint_slice.get("addressType") not in ("IPv4", "IPv6"):
            continue
        for endpoint in endpoint_slice.get("endpoints") or []:
            for address in endpoint.get("addresses") or []:
                try:
                    found.add(ipaddress.ip_address(address))
                except ValueError:
                    continue
    return tuple(host_cidr(str(ip)) for ip in sorted(found, key=lambda ip: (ip.version, ip)))


def read_apiserver_cidrs(cluster: Cluster) -> tuple[str, ...]:
    """The API server's addresses as the cluster publishes them; ClusterError naming --apiserver-cidr when it cannot."""
    try:
        slices = cluster.list(
            kinds.ENDPOINT_SLICE, APISERVER_SERVICE_NAMESPACE, selector=f"{SERVICE_NAME_LABEL}={APISERVER_SERVICE}"
        )
    except ClusterError as exc:
        if exc.reason != "forbidden":
            raise
        raise ClusterError(
            f"cannot read the API server's addresses for the workflow's NetworkPolicy from {WHERE}: "
            f"not allowed to list endpointslices.discovery.k8s.io in namespace {APISERVER_SERVICE_NAMESPACE!r} "
            f"({exc.details.get('server_message') or 'forbidden'}). Pass --apiserver-cidr CIDR (repeatable) with the "
            f"addresses the API server's service proxy connects from (a cluster admin sees them with `{SHOW_COMMAND}`), "
            f"or ask for `list` on endpointslices in {APISERVER_SERVICE_NAMESPACE!r}",
            reason="forbidden",
            **exc.details,
        ) from None
    cidrs = cidrs_from_slices(slices)
    if not cidrs:
        raise ClusterError(
            f"the cluster publishes no API server address in {WHERE} (see `{SHOW_COMMAND}`), so the workflow's "
            "NetworkPolicy cannot admit the service proxy that `pipedreamer run` uses. Pass --apiserver-cidr CIDR "
            "(repeatable) with the addresses it connects from",
            reason="not-found",
        )
    return cidrs
