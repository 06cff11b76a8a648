"""Talking to one API server: config loading, bounded requests, failures → ClusterError.

Config comes from `--kubeconfig`, else `$KUBECONFIG`, else `~/.kube/config`,
else the in-cluster service account. Every request has a connect timeout and
a read timeout, and urllib3 does not retry, so an unreachable or silent server
fails within seconds, not minutes.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import time
from typing import Any, Iterator, Mapping, Sequence

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from k8s.errors import ClusterError
from k8s.kinds import Kind

FIELD_MANAGER = "pipedreamer"
CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 10.0
USER_AGENT = "pipedreamer"
IN_CLUSTER_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
DEFAULT_KUBECONFIG = "~/.kube/config"

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"


# ------------------------------------------------------------------- config


def _kubeconfig_paths(kubeconfig: str | None) -> tuple[str, bool]:
    """The kubeconfig path list to read, and whether the user named it."""
    if kubeconfig:
        return kubeconfig, True
    env = os.environ.get("KUBECONFIG", "")
    if env.strip(":"):
        return env, True
    return DEFAULT_KUBECONFIG, False


def _origin(kubeconfig: str | None) -> str:
    return "from --kubeconfig" if kubeconfig else "from $KUBECONFIG"


def _existing(paths: str) -> list[str]:
    return [p for p in paths.split(os.pathsep) if p and pathlib.Path(p).expanduser().is_file()]


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def _context_entry(paths: str, context: str | None) -> dict:
    try:
        contexts, current = k8s_config.list_kube_config_contexts(config_file=paths)
    except ConfigException as exc:
        raise ClusterError(f"cannot read kubeconfig {paths}: {exc}", reason="config") from None
    except Exception as exc:  # noqa: BLE001 - yaml and OS errors from a broken file
        raise ClusterError(f"cannot read kubeconfig {paths}: {exc}", reason="config") from None
    if context is None:
        if not current:
            raise ClusterError(
                f"kubeconfig {paths} has no current-context; pass --context "
                f"(available: {', '.join(c['name'] for c in contexts) or 'none'})",
                reason="config",
            )
        return current
    for entry in contexts or []:
        if entry.get("name") == context:
            return entry
    names = ", ".join(c["name"] for c in contexts or []) or "none"
    raise ClusterError(f"context {context!r} not found in kubeconfig {paths} (available: {names})", reason="config")


def resolve_namespace(kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None) -> str:
    """`--namespace`, else the context's namespace, else the pod's, else `default`; never connects.

    A missing kubeconfig is not an error here (`deploy --dry-run` needs no cluster).
    """
    if namespace:
        return namespace
    paths, named = _kubeconfig_paths(kubeconfig)
    if _existing(paths):
        entry = _context_entry(paths, context)
        return (entry.get("context") or {}).get("namespace") or "default"
    # No readable kubeconfig: fine for a dry run, unless a context was asked for.
    if context:
        raise ClusterError(f"--context {context!r} given but no kubeconfig found at {paths}", reason="config")
    if _in_cluster():
        try:
            return pathlib.Path(IN_CLUSTER_NAMESPACE_FILE).read_text().strip() or "default"
        except OSError:
            pass
    return "default"


def connect(
    kubeconfig: str | None = None,
    context: str | None = None,
    namespace: str | None = None,
    *,
    request_timeout: float = REQUEST_TIMEOUT,
) -> "Cluster":
    """A Cluster for the chosen kubeconfig and context (or the in-cluster config); no request yet."""
    configuration = k8s_client.Configuration()
    paths, named = _kubeconfig_paths(kubeconfig)
    if _existing(paths):
        entry = _context_entry(paths, context)
        context_name = entry["name"]
        try:
            k8s_config.load_kube_config(
                config_file=paths, context=context_name, client_configuration=configuration, persist_config=False
            )
        except ConfigException as exc:
            raise ClusterError(f"kubeconfig {paths}, context {context_name!r}: {exc}", reason="config") from None
        except Exception as exc:  # noqa: BLE001 - missing cert files, exec plugins that fail
            raise ClusterError(
                f"kubeconfig {paths}, context {context_name!r}: {type(exc).__name__}: {exc}", reason="config"
            ) from None
        default_ns = (entry.get("context") or {}).get("namespace") or "default"
        source = f"kubeconfig {paths}, context {context_name!r}"
    elif named:
        raise ClusterError(f"kubeconfig {paths} not found ({_origin(kubeconfig)})", reason="config")
    elif context:
        raise ClusterError(f"--context {context!r} given but no kubeconfig found at {paths}", reason="config")
    elif _in_cluster():
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise ClusterError(f"in-cluster config: {exc}", reason="config") from None
        default_ns = resolve_namespace()
        context_name = None
        source = "in-cluster service account"
    else:
        raise ClusterError(
            f"no Kubernetes config: {paths} does not exist and this is not a pod; "
            "pass --kubeconfig or set KUBECONFIG",
            reason="config",
        )
    # Fail fast: no silent retries behind a bounded timeout.
    configuration.retries = urllib3.util.Retry(total=0, connect=0, read=0, redirect=0, status=0)
    api_client = k8s_client.ApiClient(configuration)
    api_client.user_agent = USER_AGENT
    return Cluster(
        api_client,
        namespace=namespace or default_ns,
        server=configuration.host,
        source=source,
        context=context_name,
        request_timeout=request_timeout,
    )


# ------------------------------------------------------------------ cluster


class Cluster:
    """One API server as seen through one set of credentials, in one default namespace."""

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        namespace: str,
        server: str,
        source: str,
        context: str | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
    ):
        self.api_client = api_client
        self.namespace = namespace
        self.server = server
        self.source = source
        self.context = context
        self.request_timeout = request_timeout

    def close(self) -> None:
        self.api_client.close()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw requests

    def open(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, Any]] | Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
        verb: str = "get",
        resource: str = "",
        namespace: str | None = None,
        name: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> urllib3.response.BaseHTTPResponse:
        """Send one request and return the unread response (status not checked); `headers` adds to ours."""
        items = list(query.items()) if isinstance(query, Mapping) else list(query or [])
        headers = {"Accept": "application/json", "Content-Type": content_type, **(headers or {})}
        started = time.monotonic()
        try:
            method, url, headers, body, _ = self.api_client.param_serialize(
                method, path, query_params=items, header_params=headers, body=body, auth_settings=["BearerToken"]
            )
            read = self.request_timeout if timeout is None else timeout
            # math.inf: a stream that may stay quiet for long (logs --follow).
            read = None if read == float("inf") else read
            response = self.api_client.call_api(
                method, url, header_params=headers, body=body, _request_timeout=(CONNECT_TIMEOUT, read)
            )
        except Exception as exc:  # noqa: BLE001 - turned into one explained error
            elapsed = time.monotonic() - started
            raise self._transport_error(exc, verb, resource, namespace, name, timeout, elapsed) from None
        return response.response

    def request(
        self,
        method: str,
        path: str,
        *,
        verb: str,
        resource: str,
        namespace: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Send one request; return the decoded JSON body, or raise ClusterError for any non-2xx."""
        response = self.open(method, path, verb=verb, resource=resource, namespace=namespace, name=name, **kwargs)
        try:
            raw = response.data
        except Exception as exc:  # noqa: BLE001
            raise self._transport_error(exc, verb, resource, namespace, name, kwargs.get("timeout")) from None
        finally:
            response.release_conn()
        if not 200 <= response.status < 300:
            raise self.status_error(response.status, raw, verb=verb, resource=resource, namespace=namespace, name=name)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", errors="replace")

    # -- typed helpers on plain dicts

    def get(self, kind: Kind, name: str, namespace: str | None = None) -> dict | None:
        """The object, or None when it does not exist."""
        ns = self._ns(kind, namespace)
        try:
            return self.request("GET", kind.path(ns, name), verb="get", resource=kind.resource, namespace=ns, name=name)
        except ClusterError as exc:
            if exc.reason == "not-found" and exc.details.get("status_kind") in (kind.plural, None):
                return None
            raise

    def list(
        self,
        kind: Kind,
        namespace: str | None = None,
        *,
        selector: str | None = None,
        field_selector: str | None = None,
        all_namespaces: bool = False,
        limit: int | None = None,
    ) -> list[dict]:
        query = []
        if selector:
            query.append(("labelSelector", selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if limit:
            query.append(("limit", limit))
        if kind.namespaced and all_namespaces:
            ns = None
            base = f"/api/{kind.api_version}" if not kind.group else f"/apis/{kind.api_version}"
            path = f"{base}/{kind.plural}"
        else:
            ns = self._ns(kind, namespace)
            path = kind.path(ns)
        result = self.request("GET", path, query=query, verb="list", resource=kind.resource, namespace=ns)
        return list((result or {}).get("items") or [])

    def apply(self, kind: Kind, obj: Mapping, *, force: bool = False, dry_run: bool = False) -> dict:
        """Server-side apply with field manager `pipedreamer`; `dry_run`: validated, authorized and admitted, not stored."""
        name = obj["metadata"]["name"]
        ns = self._ns(kind, obj["metadata"].get("namespace"))
        query = [("fieldManager", FIELD_MANAGER)]
        if force:
            query.append(("force", "true"))
        if dry_run:
            query.append(("dryRun", "All"))
        return self.request(
            "PATCH",
            kind.path(ns, name),
            query=query,
            body=dict(obj),
            content_type=APPLY_PATCH,
            verb="patch",
            resource=kind.resource,
            namespace=ns,
            name=name,
        )

    def create(self, kind: Kind, obj: Mapping, namespace: str | None = None, *, subresource: str | None = None) -> dict:
        ns = self._ns(kind, namespace or obj.get("metadata", {}).get("namespace"))
        path = kind.path(ns) if subresource is None else kind.path(ns, obj["metadata"]["name"], subresource)
        return self.request(
            "POST",
            path,
            body=dict(obj),
            query=[("fieldManager", FIELD_MANAGER)],
            verb="create",
            resource=kind.resource,
            namespace=ns,
            name=(obj.get("metadata") or {}).get("name"),
        )

    def delete(self, kind: Kind, name: str, namespace: str | None = None) -> bool:
        """Delete with background propagation (owned ReplicaSets, Pods and Jobs follow); False if gone."""
        ns = self._ns(kind, namespace)
        try:
            self.request(
                "DELETE",
                kind.path(ns, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
                verb="delete",
                resource=kind.resource,
                namespace=ns,
                name=name,
            )
        except ClusterError as exc:
            if exc.reason == "not-found":
                return False
            raise
        return True

    def server_version(self) -> dict:
        return self.request("GET", "/version", verb="get", resource="/version")

    def _ns(self, kind: Kind, namespace: str | None) -> str | None:
        return (namespace or self.namespace) if kind.namespaced else None

    # -- errors

    def where(self) -> str:
        return f"{self.server} ({self.source})"

    def _transport_error(
        self,
        exc: BaseException,
        verb: str,
        resource: str,
        namespace: str | None,
        name: str | None,
        timeout: float | None,
        elapsed: float | None = None,
    ) -> ClusterError:
        reason = _describe_transport(exc, timeout if timeout is not None else self.request_timeout, elapsed)
        if isinstance(exc, ApiException) and exc.status:
            return self.status_error(exc.status, (exc.body or "").encode(), verb=verb, resource=resource,
                                     namespace=namespace, name=name)  # fmt: skip
        kind = "timeout" if "no answer" in reason else "unreachable"
        return ClusterError(
            f"cannot reach the Kubernetes API server at {self.server}: {reason} ({self.source})",
            reason=kind,
            server=self.server,
        )

    def status_error(
        self,
        status: int,
        raw: bytes,
        *,
        verb: str,
        resource: str,
        namespace: str | None = None,
        name: str | None = None,
    ) -> ClusterError:
        """A ClusterError for an HTTP error answer, from the API server's Status when there is one."""
        doc = _json_or_none(raw)
        message = ""
        status_kind = None
        causes: list[dict] = []
        if isinstance(doc, dict) and doc.get("kind") == "Status":
            message = doc.get("message") or doc.get("reason") or ""
            details = doc.get("details") or {}
            status_kind = details.get("kind")
            causes = list(details.get("causes") or [])
        elif raw:
            message = raw.decode("utf-8", errors="replace").strip()[:500]
        target = resource + (f" {name!r}" if name else "")
        scope = f" in namespace {namespace!r}" if namespace else ""
        common = dict(status=status, verb=verb, resource=resource, namespace=namespace, name=name,
                      server_message=message, status_kind=status_kind)  # fmt: skip
        if status == 401:
            return ClusterError(
                f"unauthorized: the API server at {self.server} rejected the credentials ({self.source})",
                reason="unauthorized",
                **common,
            )
        if status == 403:
            # SSA of a new object is authorized as `create`: name the verb the server checked.
            checked = re.search(r'cannot (\S+) resource "([^"]+)"', message or "")
            if checked:
                verb = checked.group(1)
                common["verb"] = verb
            return ClusterError(
                f"forbidden: not allowed to {verb} {resource}{scope}"
                + (f" ({message})" if message else "")
                + "; ask a cluster admin for RBAC access, or run `pipedreamer cluster check` to see what is missing",
                reason="forbidden",
                **common,
            )
        if status == 404:
            missing_ns = re.match(r'namespaces "([^"]+)" not found', message or "")
            if missing_ns and status_kind == "namespaces":
                return ClusterError(
                    f"namespace {missing_ns.group(1)!r} does not exist; create it with "
                    f"`pipedreamer cluster check --fix --namespace {missing_ns.group(1)}`",
                    reason="not-found",
                    **common,
                )
            return ClusterError(f"{target} not found{scope}", reason="not-found", **common)
        if status == 409:
            return ClusterError(
                f"conflict on {target}{scope}: {message}", reason="conflict", causes=causes, **common
            )
        if status == 422:
            fields = "; ".join(f"{c.get('field', '')}: {c.get('message', '')}" for c in causes) or message
            return ClusterError(f"{target} is invalid{scope}: {fields}", reason="invalid", causes=causes, **common)
        if status == 429 or status >= 500:
            return ClusterError(
                f"the API server could not {verb} {target}{scope} (HTTP {status}): {message or 'no details'}",
                reason="server",
                **common,
            )
        return ClusterError(f"cannot {verb} {target}{scope} (HTTP {status}): {message or 'no details'}",
                            reason="failed", **common)  # fmt: skip


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, TypeError):
        return None


def _describe_transport(exc: BaseException, timeout: float, elapsed: float | None = None) -> str:
    """A short human cause for a failure below HTTP.

    urllib3 reports a TLS handshake that never completes as a *read* timeout
    (after the connect timeout); `elapsed` well short of `timeout` tells the
    two apart, so a silent endpoint is not mistaken for a slow answer.
    """
    if elapsed is not None and timeout not in (None, float("inf")) and elapsed + 1.0 < timeout:
        timed_out = _find(exc, (urllib3.exceptions.ReadTimeoutError, TimeoutError))
        if timed_out is not None:
            return f"no TLS handshake or answer within {CONNECT_TIMEOUT:g}s of connecting (is it an API server?)"
    inner: BaseException | None = exc
    seen = set()
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        if isinstance(inner, urllib3.exceptions.MaxRetryError) and inner.reason is not None:
            inner = inner.reason
            continue
        # NewConnectionError subclasses ConnectTimeoutError: test it first.
        if isinstance(inner, urllib3.exceptions.NewConnectionError):
            text = str(inner)
            if "refused" in text.lower():
                return "connection refused"
            return text.split(": ", 1)[-1]
        if isinstance(inner, urllib3.exceptions.ReadTimeoutError):
            return f"no answer within {timeout:g}s"
        if isinstance(inner, (urllib3.exceptions.ConnectTimeoutError,)):
            return f"no connection within {CONNECT_TIMEOUT:g}s"
        if isinstance(inner, urllib3.exceptions.NameResolutionError):
            return "cannot resolve the server's host name"
        if isinstance(inner, urllib3.exceptions.SSLError):
            return f"TLS error: {inner}"
        if isinstance(inner, urllib3.exceptions.ProtocolError):
            return f"connection broken: {inner}"
        if isinstance(inner, ApiException) and not inner.status:
            return (inner.reason or "request failed").replace("\n", ": ")
        if isinstance(inner, TimeoutError):
            return f"no answer within {timeout:g}s"
        nxt = inner.__cause__ or inner.__context__
        if nxt is None:
            break
        inner = nxt
    return f"{type(exc).__name__}: {exc}"


def _find(exc: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of `types` in exc's chain of reasons, causes and contexts."""
    inner: BaseException | None = exc
    seen = set()
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        if isinstance(inner, types):
            return inner
        if isinstance(inner, urllib3.exceptions.MaxRetryError) and inner.reason is not None:
            inner = inner.reason
            continue
        inner = inner.__cause__ or inner.__context__
    return None


def iter_lines(response: urllib3.response.BaseHTTPResponse) -> Iterator[str]:
    """Lines of a streamed response body as they arrive."""
    pending = b""
    for chunk in response.stream(4096, decode_content=True):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", errors="replace")
    if pending:
        yield pending.decode("utf-8", errors="replace")
