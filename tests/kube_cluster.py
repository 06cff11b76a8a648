"""A real Kubernetes control plane on loopback, for integration tests.

``KubeCluster.start()`` runs etcd, kube-apiserver and (by default) a
kube-controller-manager, built from pinned Go modules by
``tools/kube/build.sh``, in a fresh temporary directory, and returns once the
API server's ``/readyz`` answers 200:

* TLS everywhere, from a throwaway CA made with the ``openssl`` command;
* authentication by client certificate (and, for clients that prefer it, by
  bearer token from a static token file): ``admin`` in ``system:masters``,
  and ``noaccess``, a user with no RBAC bindings at all (it can discover the
  API and review its own access, as any authenticated user can, and nothing
  else);
* ``--authorization-mode=RBAC``; admission with ``PodSecurity`` (cluster
  default ``privileged``, so it only acts on namespaces labelled
  ``pod-security.kubernetes.io/enforce=...``), ``ServiceAccount``,
  ``NamespaceLifecycle``, ``LimitRanger``, ``ResourceQuota``,
  ``RuntimeClass`` and the rest of the API server's defaults;
* service-account signing keys, so tokens and the ServiceAccount admission
  work as on a real cluster;
* the API server advertises this machine's own address (the source address
  of its route to the network; it still listens on loopback only) and its
  lease endpoint reconciler publishes it in the EndpointSlice of the
  ``default/kubernetes`` Service, as on a real cluster (loopback addresses
  are refused there). ``advertise_address`` is that address, ``""`` on a
  machine without one, whose ``default/kubernetes`` then has no endpoints;
* the controller manager runs only the controllers that need no nodes and
  make the API behave as tests expect: ``serviceaccount`` (each namespace
  gets its ``default`` ServiceAccount, without which a Pod is refused),
  ``namespace`` (deleting a namespace finishes), ``garbagecollector``,
  ``deployment`` and ``replicaset`` (a Deployment gets a ReplicaSet and
  Pods, which stay Pending: there is no scheduler and no kubelet);
* ``scheduler=True`` adds a kube-scheduler, and ``client_kubeconfig()`` and
  ``issue_serving_cert()`` give a node's parts their credentials: a cluster
  started with ``tests.kube_node.node_cluster_options()`` gets a real node
  from ``tests/kube_node.py``. The API server always has a client
  certificate for kubelets (``system:masters``), as a real one does.

Startup takes a few seconds (about 5-10 s on two cores), so start the cluster
once per pytest session and give each test its own namespace::

    @pytest.fixture(scope="session")
    def kube():
        with KubeCluster.start() as cluster:
            yield cluster

The binaries come from ``$PIPEDREAMER_KUBE_APISERVER``, ``$PIPEDREAMER_ETCD``
and ``$PIPEDREAMER_KUBE_CONTROLLER_MANAGER`` when set, else from
``${PIPEDREAMER_CACHE:-~/.cache/pipedreamer}/kube/bin/`` where
``tools/kube/build.sh`` links them. A missing binary, or a server that does
not come up, raises ``KubeClusterError`` with the reason and the tail of the
server's log: a test that needs the cluster fails, it never skips.

The processes get SIGKILL if the thread that started them ends (Linux
PR_SET_PDEATHSIG), so nothing outlives a killed test run: start the cluster
from the main thread (pytest fixtures run there). Each cluster lives in its
own ``/tmp/pipedreamer-kube-*`` directory; deleting that directory under a
running cluster kills its etcd. ``assert_running()`` says whether all parts
are still up.

This module uses the standard library only (and the ``openssl`` command).
"""

from __future__ import annotations

import atexit
import ctypes
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["KubeCluster", "KubeClusterError", "find_binary"]

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "tools" / "kube" / "build.sh"

ADMIN_USER = "admin"
NOACCESS_USER = "noaccess"
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/12"
CONTROLLERS = "serviceaccount,namespace,garbagecollector,deployment,replicaset"
AUTHORIZATION_MODE = "RBAC"
ADMISSION_PLUGINS = "NamespaceLifecycle,LimitRanger,ServiceAccount,PodSecurity,RuntimeClass,ResourceQuota"

_ENV_OVERRIDES = {
    "kube-apiserver": "PIPEDREAMER_KUBE_APISERVER",
    "etcd": "PIPEDREAMER_ETCD",
    "kube-controller-manager": "PIPEDREAMER_KUBE_CONTROLLER_MANAGER",
    "kube-score": "PIPEDREAMER_KUBE_SCORE",
    "kube-scheduler": "PIPEDREAMER_KUBE_SCHEDULER",
}


class KubeClusterError(RuntimeError):
    """The cluster could not be started; the message says why."""


def cache_dir() -> Path:
    root = os.environ.get("PIPEDREAMER_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "pipedreamer"
    )
    return Path(root) / "kube"


def find_binary(name: str) -> Path:
    """Path of one of the tools that ``tools/kube/build.sh`` builds."""
    env = _ENV_OVERRIDES.get(name)
    if env and os.environ.get(env):
        path = Path(os.environ[env])
        where = f"${env}"
    else:
        path = cache_dir() / "bin" / name
        where = "the tools/kube/build.sh cache"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise KubeClusterError(
            f"{name} not found at {path} (from {where}); "
            f"build it with: bash {BUILD_SCRIPT.relative_to(REPO_ROOT)}"
        )
    return path.resolve()


def _free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (held open together, then freed)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def host_address() -> str:
    """This machine's IPv4 address towards the network, or '' when it has none but loopback.

    A UDP socket "connected" to a documentation address (RFC 5737) makes the
    kernel choose the source address of that route; no packet is sent. IPv4
    only: the cluster's Service network is IPv4.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            address = probe.getsockname()[0]
    except OSError:
        return ""
    ip = ipaddress.ip_address(address)
    return "" if ip.is_loopback or ip.is_link_local or ip.is_unspecified else address


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Child side of Popen: get SIGKILL if the test process dies first."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # noqa: BLE001 - best effort: without it the child outlives a killed test run
        pass


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


class _Openssl:
    """The few ``openssl`` calls that make the cluster's keys and certificates."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.exe = shutil.which("openssl")
        if not self.exe:
            raise KubeClusterError("the openssl command is needed to make certificates; not on PATH")

    def _run(self, *args: str) -> None:
        proc = subprocess.run(
            [self.exe, *args], cwd=self.dir, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise KubeClusterError(
                f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip() or proc.stdout.strip()}"
            )

    def ca(self, name: str, subject: str) -> tuple[Path, Path]:
        key, crt = self.dir / f"{name}.key", self.dir / f"{name}.crt"
        self._run(
            "req", "-x509", "-new", "-noenc", "-sha256",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-keyout", key.name, "-out", crt.name, "-days", "3650", "-subj", subject,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        )  # fmt: skip
        return key, crt

    def leaf(
        self, name: str, subject: str, ca: tuple[Path, Path], usage: str, san: str = ""
    ) -> tuple[Path, Path]:
        key, crt = self.dir / f"{name}.key", self.dir / f"{name}.crt"
        ext = [
            "-addext", "basicConstraints=critical,CA:FALSE",
            "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
            "-addext", f"extendedKeyUsage={usage}",
        ]  # fmt: skip
        if san:
            ext += ["-addext", f"subjectAltName={san}"]
        self._run(
            "req", "-x509", "-new", "-noenc", "-sha256",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-keyout", key.name, "-out", crt.name, "-days", "365", "-subj", subject,
            "-CA", str(ca[1]), "-CAkey", str(ca[0]), *ext,
        )  # fmt: skip
        return key, crt

    def signing_key(self, name: str) -> tuple[Path, Path]:
        key, pub = self.dir / f"{name}.key", self.dir / f"{name}.pub"
        self._run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-out", key.name)  # fmt: skip
        self._run("pkey", "-in", key.name, "-pubout", "-out", pub.name)
        return key, pub


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen
    log: Path


@dataclass
class KubeCluster:
    """A running etcd + kube-apiserver (+ kube-controller-manager) on loopback.

    Attributes once started:
      ``server``              https URL of the API server (``https://127.0.0.1:PORT``)
      ``kubeconfig``          path of a kubeconfig for ``admin`` (system:masters)
      ``kubeconfig_noaccess`` path of a kubeconfig for ``noaccess`` (no RBAC rights)
      ``ca_file``             the CA that signed the serving and client certificates
      ``admin_token``, ``noaccess_token``  bearer tokens for the same two users
      ``context``             the context name in both kubeconfigs (``pipedreamer-test``)
      ``dir``                 the temporary directory (certs, etcd data, ``*.log``)
      ``etcd_url``            etcd's client URL (plain http on loopback)
      ``advertise_address``   the address the API server publishes for ``default/kubernetes``
    """

    dir: Path
    server: str = ""
    advertise_address: str = ""
    kubeconfig: str = ""
    kubeconfig_noaccess: str = ""
    ca_file: str = ""
    admin_token: str = ""
    noaccess_token: str = ""
    etcd_url: str = ""
    context: str = "pipedreamer-test"
    keep_dir: bool = False
    _procs: list[_Proc] = field(default_factory=list, repr=False)
    _admin_cert: tuple[str, str] = ("", "")
    _ssl: "_Openssl | None" = field(default=None, repr=False)
    _ca: tuple[Path, Path] = field(default=(Path(), Path()), repr=False)

    # ----------------------------------------------------------------- start

    @classmethod
    def start(
        cls,
        *,
        timeout: float = 120.0,
        controller_manager: bool = True,
        keep_dir: bool | None = None,
        extra_apiserver_args: list[str] | tuple[str, ...] = (),
        controllers: str = CONTROLLERS,
        scheduler: bool = False,
        bind_address: str = "127.0.0.1",
        authorization_mode: str = AUTHORIZATION_MODE,
        admission_plugins: str = ADMISSION_PLUGINS,
    ) -> "KubeCluster":
        """Start the cluster; return once ``/readyz`` is 200 (or raise KubeClusterError).

        ``timeout`` bounds the whole startup. ``controller_manager=False``
        runs the API server alone (no ``default`` ServiceAccounts, namespaces
        stay Terminating); ``controllers`` is its ``--controllers``.
        ``scheduler=True`` adds a kube-scheduler (for clusters with a real
        node, tests/kube_node.py). ``bind_address`` is where the API server
        listens (``0.0.0.0`` lets a node in a network namespace of its own reach
        it at ``advertise_address``; kubeconfigs still name 127.0.0.1).
        ``authorization_mode`` and ``admission_plugins`` are the API server's
        ``--authorization-mode`` and ``--enable-admission-plugins`` (list flags,
        which repeating would extend rather than replace).
        ``keep_dir`` keeps the temporary directory after ``stop()`` (default:
        ``$PIPEDREAMER_KUBE_KEEP`` set). Extra API server flags go last and so win.
        """
        binaries = {"etcd": find_binary("etcd"), "kube-apiserver": find_binary("kube-apiserver")}
        if controller_manager:
            binaries["kube-controller-manager"] = find_binary("kube-controller-manager")
        if scheduler:
            binaries["kube-scheduler"] = find_binary("kube-scheduler")
        if keep_dir is None:
            keep_dir = bool(os.environ.get("PIPEDREAMER_KUBE_KEEP"))
        deadline = time.monotonic() + timeout
        for attempt in range(3):
            directory = Path(tempfile.mkdtemp(prefix="pipedreamer-kube-"))
            cluster = cls(dir=directory, keep_dir=keep_dir)
            try:
                cluster._start(binaries, deadline, list(extra_apiserver_args), controllers, bind_address,
                               authorization_mode, admission_plugins)
            except KubeClusterError as exc:
                cluster.stop()
                # Ports are picked free, then bound by the servers: another
                # process can take one in between. Try again with new ones.
                if "address already in use" in str(exc) and attempt < 2:
                    continue
                raise
            except BaseException:
                cluster.stop()
                raise
            atexit.register(cluster.stop)
            return cluster
        raise AssertionError("unreachable")

    def _start(self, binaries: dict[str, Path], deadline: float, extra: list[str], controllers: str,
               bind_address: str, authorization_mode: str, admission_plugins: str) -> None:  # fmt: skip
        pki = self.dir / "pki"
        pki.mkdir()
        ssl_ = self._ssl = _Openssl(pki)
        ca = self._ca = ssl_.ca("ca", "/CN=pipedreamer-test-ca")
        self.advertise_address = host_address()
        # A real node (in a network namespace of its own) reaches the API server at that address.
        advertised = f"IP:{self.advertise_address}," if self.advertise_address else ""
        serving = ssl_.leaf(
            "apiserver", "/CN=kube-apiserver", ca, "serverAuth",
            f"IP:127.0.0.1,{advertised}IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
            "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local",
        )  # fmt: skip
        # How the API server proves itself to kubelets (pods/log, exec): a real
        # kubelet checks it against the cluster CA; the stand-in ignores it.
        kubelet_client = ssl_.leaf("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client",
                                   ca, "clientAuth")  # fmt: skip
        admin = ssl_.leaf("admin", f"/O=system:masters/CN={ADMIN_USER}", ca, "clientAuth")
        noaccess = ssl_.leaf("noaccess", f"/CN={NOACCESS_USER}", ca, "clientAuth")
        sa_key, sa_pub = ssl_.signing_key("sa")
        self.ca_file = str(ca[1])
        self._admin_cert = (str(admin[1]), str(admin[0]))

        self.admin_token = os.urandom(16).hex()
        self.noaccess_token = os.urandom(16).hex()
        tokens = pki / "tokens.csv"
        tokens.write_text(
            f'{self.admin_token},{ADMIN_USER},uid-admin,"system:masters"\n'
            f"{self.noaccess_token},{NOACCESS_USER},uid-noaccess\n"
        )
        tokens.chmod(0o600)

        etcd_port, etcd_peer, api_port = _free_ports(3)
        self.etcd_url = f"http://127.0.0.1:{etcd_port}"
        self.server = f"https://127.0.0.1:{api_port}"
        self.kubeconfig = str(self._write_kubeconfig("admin", ADMIN_USER, admin))
        self.kubeconfig_noaccess = str(self._write_kubeconfig("noaccess", NOACCESS_USER, noaccess))

        if self.advertise_address:
            publish = [f"--advertise-address={self.advertise_address}", "--endpoint-reconciler-type=lease"]
        else:
            # The "kubernetes" Service cannot point at a loopback address.
            publish = ["--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none"]

        peer = f"http://127.0.0.1:{etcd_peer}"
        self._spawn("etcd", binaries["etcd"], [
            "--name=default",
            f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync",  # a test cluster: speed over durability
            "--log-level=warn",
        ])  # fmt: skip
        # The API server waits for etcd on its own; starting both now saves time.
        self._spawn("kube-apiserver", binaries["kube-apiserver"], [
            f"--bind-address={bind_address}",
            *publish,
            f"--secure-port={api_port}",
            f"--etcd-servers={self.etcd_url}",
            f"--tls-cert-file={serving[1]}",
            f"--tls-private-key-file={serving[0]}",
            f"--client-ca-file={ca[1]}",
            f"--token-auth-file={tokens}",
            f"--authorization-mode={authorization_mode}",
            # As kubeadm and k0s do: PodSecurity, not this flag, keeps
            # privileged pods out of restricted namespaces.
            "--allow-privileged=true",
            f"--enable-admission-plugins={admission_plugins}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={sa_pub}",
            f"--service-account-signing-key-file={sa_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            f"--kubelet-client-certificate={kubelet_client[1]}",
            f"--kubelet-client-key={kubelet_client[0]}",
            "--profiling=false",
            *extra,
        ])  # fmt: skip
        self._wait_ready(deadline)
        if self.advertise_address:
            self._wait_published(deadline)

        if "kube-controller-manager" in binaries:
            cm = ssl_.leaf("controller-manager", f"/CN={CONTROLLER_MANAGER_USER}", ca, "clientAuth")
            cm_kubeconfig = self._write_kubeconfig("controller-manager", CONTROLLER_MANAGER_USER, cm)
            self._spawn("kube-controller-manager", binaries["kube-controller-manager"], [
                f"--kubeconfig={cm_kubeconfig}",
                f"--authentication-kubeconfig={cm_kubeconfig}",
                f"--authorization-kubeconfig={cm_kubeconfig}",
                f"--controllers={controllers}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",  # as kubeadm: one identity per controller
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                f"--service-account-private-key-file={sa_key}",
                f"--root-ca-file={ca[1]}",
                f"--cluster-signing-cert-file={ca[1]}",
                f"--cluster-signing-key-file={ca[0]}",
            ])  # fmt: skip
            self._wait_default_serviceaccount(deadline)
        if "kube-scheduler" in binaries:
            scheduler = self.client_kubeconfig("scheduler", "system:kube-scheduler")
            self._spawn("kube-scheduler", binaries["kube-scheduler"], [
                f"--kubeconfig={scheduler}",
                f"--authentication-kubeconfig={scheduler}",
                f"--authorization-kubeconfig={scheduler}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
            ])  # fmt: skip

    def client_kubeconfig(self, name: str, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig for a new client certificate of ``user`` (in ``groups``), signed by the cluster CA.

        Its server is ``server`` (loopback); a node in its own network
        namespace rewrites it to ``advertise_address``.
        """
        subject = "".join(f"/O={group}" for group in groups) + f"/CN={user}"
        cert = self._ssl.leaf(f"client-{name}", subject, self._ca, "clientAuth")
        return self._write_kubeconfig(name, user, cert)

    def issue_serving_cert(self, name: str, san: str) -> tuple[Path, Path]:
        """(key, certificate) for a server (a kubelet), signed by the cluster CA."""
        return self._ssl.leaf(f"serving-{name}", f"/CN={name}", self._ca, "serverAuth", san)

    def _write_kubeconfig(self, name: str, user: str, cert: tuple[Path, Path]) -> Path:
        path = self.dir / f"kubeconfig-{name}.yaml"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "pipedreamer-test",
                 "cluster": {"server": self.server, "certificate-authority": self.ca_file}},
            ],
            "users": [
                {"name": user,
                 "user": {"client-certificate": str(cert[1]), "client-key": str(cert[0])}},
            ],
            "contexts": [
                {"name": self.context,
                 "context": {"cluster": "pipedreamer-test", "user": user, "namespace": "default"}},
            ],
            "current-context": self.context,
            "preferences": {},
        }  # fmt: skip
        # JSON is YAML: no YAML library needed here.
        path.write_text(json.dumps(config, indent=2) + "\n")
        path.chmod(0o600)
        return path

    def _spawn(self, name: str, binary: Path, args: list[str]) -> None:
        log = self.dir / f"{name}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                [str(binary), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                preexec_fn=_die_with_parent,
            )
        self._procs.append(_Proc(name, popen, log))

    def _check_alive(self) -> None:
        if self._procs:
            self.assert_running()

    def _fail(self, why: str) -> KubeClusterError:
        logs = "\n".join(
            f"--- last lines of {p.name} ({p.log}):\n{_tail(p.log)}" for p in self._procs
        )
        return KubeClusterError(f"{why}\n{logs}")

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context trusting the cluster CA, authenticated as admin."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.load_cert_chain(*self._admin_cert)
        return ctx

    def request(self, method: str, path: str, body: dict | None = None,
                timeout: float = 10.0) -> tuple[int, dict | str]:  # fmt: skip
        """One admin request to the API server (stdlib only); returns (status, body)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self.ssl_context(), timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        text = raw.decode(errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def _wait_ready(self, deadline: float) -> None:
        last = "no answer yet"
        while True:
            self._check_alive()
            try:
                status, body = self.request("GET", "/readyz", timeout=5)
                if status == 200:
                    return
                last = f"/readyz answered {status}: {str(body).strip()[-800:]}"
            except (OSError, ssl.SSLError) as exc:
                last = f"/readyz: {exc}"
            if time.monotonic() > deadline:
                raise self._fail(f"kube-apiserver at {self.server} not ready in time ({last})")
            time.sleep(0.25)

    def _wait_published(self, deadline: float) -> None:
        """Until the endpoint reconciler has published advertise_address for default/kubernetes."""
        path = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io/service-name%3Dkubernetes"
        while True:
            self._check_alive()
            try:
                status, body = self.request("GET", path, timeout=5)
                if status == 200 and any(
                    self.advertise_address in endpoint.get("addresses", [])
                    for item in body.get("items", [])
                    for endpoint in item.get("endpoints") or []
                ):
                    return
            except (OSError, ssl.SSLError):
                pass
            if time.monotonic() > deadline:
                raise self._fail(f"the API server did not publish {self.advertise_address} for default/kubernetes in time")
            time.sleep(0.25)

    def _wait_default_serviceaccount(self, deadline: float) -> None:
        path = "/api/v1/namespaces/default/serviceaccounts/default"
        while True:
            self._check_alive()
            try:
                status, _ = self.request("GET", path, timeout=5)
                if status == 200:
                    return
            except (OSError, ssl.SSLError):
                pass
            if time.monotonic() > deadline:
                raise self._fail(
                    "kube-controller-manager did not create the default ServiceAccount in time"
                )
            time.sleep(0.25)

    # ------------------------------------------------------------ use / stop

    def assert_running(self) -> None:
        """Raise KubeClusterError (with the log's tail) if a component has exited."""
        for proc in self._procs:
            code = proc.popen.poll()
            if code is not None:
                raise KubeClusterError(
                    f"{proc.name} has exited with status {code}; "
                    f"last lines of {proc.log}:\n{_tail(proc.log)}"
                )
        if not self._procs:
            raise KubeClusterError("the cluster is stopped")

    def env(self, noaccess: bool = False) -> dict[str, str]:
        """Environment for a subprocess (``os.environ`` plus ``KUBECONFIG``)."""
        env = dict(os.environ)
        env["KUBECONFIG"] = self.kubeconfig_noaccess if noaccess else self.kubeconfig
        return env

    def log_tail(self, name: str = "kube-apiserver", lines: int = 40) -> str:
        """Last lines of one component's log (``etcd``, ``kube-apiserver``, ...)."""
        return _tail(self.dir / f"{name}.log", lines)

    def stop(self, grace: float = 10.0) -> None:
        """Stop every process (SIGTERM, wait ``grace`` s, SIGKILL); remove the directory.

        Safe to call twice; also called at interpreter exit. The controller
        manager and the API server stop before etcd.
        """
        atexit.unregister(self.stop)
        for proc in reversed(self._procs):
            if proc.popen.poll() is None:
                proc.popen.terminate()
                try:
                    proc.popen.wait(grace)
                except subprocess.TimeoutExpired:
                    proc.popen.kill()
                    proc.popen.wait()
        self._procs.clear()
        if not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "KubeCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
