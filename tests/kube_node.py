"""A real worker node for the test cluster: containerd, runc, gVisor, CNI, a kubelet, kube-proxy and CoreDNS.

``KubeNode.start(cluster, workdir, registry=…)`` joins one node to a running
``KubeCluster`` (started with ``scheduler=True`` and ``bind_address="0.0.0.0"``)
and returns once the API server reports it Ready. Everything is built from
pinned Go modules by ``tools/kube/build.sh`` (``node`` group), except runc
(Debian's):

* the node lives in a network namespace of its own (``pdn…``) joined to this
  machine by a veth pair on a private /30, like a second machine on a wire:
  its kubelet, containerd, kube-proxy (iptables) and CoreDNS never touch this
  machine's own network, firewall or DNS, and several test runs can each have
  a node at once. Pods get addresses from a /24 on a CNI bridge inside it;
  this machine routes that /24 to the node, so the API server's service
  proxy reaches pods as on a real cluster;
* the processes share this machine's mount namespace (``nsenter --net``, not
  ``ip netns exec``, which would give the kubelet mounts containerd cannot see)
  and keep all their state under ``workdir``: containerd's root, state and
  socket, runc's and runsc's roots, the kubelet's root, pod logs, CNI
  configuration and IPAM, and a cgroup parent of their own;
* gVisor is set up the way a user sets up a node: ``deploy/gvisor/install.sh``
  installs runsc and containerd-shim-runsc-v1 (offline, from the built
  binaries and their sha512) and writes the ``runsc`` handler's containerd
  drop-in, which containerd's config imports. runsc uses its own network stack;
* containerd pulls images the way it would from a registry on each node's
  localhost: ``localhost:PORT`` (where the tests push) is mirrored, in
  containerd's ``certs.d``, to the same registry at this machine's side of the
  veth (plain HTTP). The pause image is built here from Kubernetes' own
  ``pause.c`` and pushed there too (there is no registry.k8s.io);
* cluster DNS: CoreDNS's kubernetes plugin on the node's address answers
  ``*.svc.cluster.local`` from the API server (the kubelet gives pods that
  address as their nameserver); kube-proxy makes ClusterIPs work.

The kubelet sets six kernel tunables it insists on (``vm.overcommit_memory``,
``kernel.panic``, …); ``stop()`` puts back the values it found, removes the
pods' containers, mounts, cgroups and the namespace, so nothing of the node
outlives it. A part that does not start raises ``KubeNodeError`` with the
reason and the tail of its log: the test fails, it never skips.

This module uses the standard library only, with the ``ip``, ``nsenter``,
``iptables`` and ``runc`` commands.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import random
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.kube_cluster import ADMISSION_PLUGINS, REPO_ROOT, KubeCluster, KubeClusterError, _die_with_parent, _tail, find_binary

__all__ = ["KubeNode", "KubeNodeError", "NODE_BINARIES", "NODE_CONTROLLERS", "node_cluster_options"]

INSTALL_GVISOR = REPO_ROOT / "deploy" / "gvisor" / "install.sh"
# What the controller manager runs when there is a node: the API's bookkeeping
# (as for KubeCluster's default) plus Jobs and CronJobs, EndpointSlices for
# Services, the clean-up of finished pods and jobs, and node lifecycle (which
# lifts the not-ready taint the API server puts on a new Node once it is Ready).
NODE_CONTROLLERS = (
    "serviceaccount,namespace,garbagecollector,deployment,replicaset,job,cronjob,endpointslice,"
    "podgc,ttl-after-finished,nodelifecycle"
)
NODE_BINARIES = ("kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2", "bridge", "host-local",
                 "loopback", "runsc", "containerd-shim-runsc-v1", "coredns")  # fmt: skip
CLUSTER_DOMAIN = "cluster.local"
# The kubelet sets these (pkg/kubelet/cm: setupKernelTunables); stop() restores them.
KUBELET_SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                   "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")  # fmt: skip
CGROUP_V1_ROOT = Path("/sys/fs/cgroup")


class KubeNodeError(KubeClusterError):
    """The node could not be started; the message says why."""


def node_cluster_options() -> dict:
    """KubeCluster.start() arguments for a cluster that gets a real node."""
    return {
        "controllers": NODE_CONTROLLERS,
        "scheduler": True,
        "bind_address": "0.0.0.0",
        # The Node authorizer and NodeRestriction give the kubelet exactly what a real one gets.
        "authorization_mode": "Node,RBAC",
        "admission_plugins": f"{ADMISSION_PLUGINS},NodeRestriction",
        # The node's name resolves nowhere (no DNS for nodes here): reach kubelets by address.
        "extra_apiserver_args": ["--kubelet-preferred-address-types=InternalIP"],
    }


def _run(*argv: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, **kwargs)
    if check and proc.returncode != 0:
        raise KubeNodeError(f"{' '.join(argv)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return proc


def _sha512(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _free_subnets() -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Network]:
    """A /30 for the veth pair and a /24 for pods, neither used by any route or address here."""
    used = []
    for line in _run("ip", "-4", "route", "show", "table", "all").stdout.splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("local", "broadcast", "unreachable", "prohibit", "blackhole"):
            word = line.split()[1]
        try:
            used.append(ipaddress.ip_network(word if word != "default" else "0.0.0.0/32", strict=False))
        except ValueError:
            continue
    for line in _run("ip", "-4", "-o", "addr").stdout.splitlines():
        used.append(ipaddress.ip_interface(line.split()[3]).network)
    used = [net for net in used if net.prefixlen > 0]
    for _ in range(200):
        link = ipaddress.ip_network(f"10.215.{random.randrange(256)}.{random.randrange(0, 256, 4)}/30")
        pods = ipaddress.ip_network(f"10.216.{random.randrange(256)}.0/24")
        if not any(link.overlaps(n) or pods.overlaps(n) for n in used):
            return link, pods
    raise KubeNodeError("no free private subnet for the node's network (10.215.0.0/16, 10.216.0.0/16)")


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen
    log: Path


@dataclass
class KubeNode:
    """A running node of ``cluster``; ``name`` is its Node, ``ip`` its InternalIP (in its namespace).

    Attributes once started: ``netns`` (``/run/netns/NAME``), ``host_ip`` (this
    machine's side of the veth, where it reaches the registry), ``pod_cidr``,
    ``dir`` (all state, and ``*.log`` of each part), ``dns`` (CoreDNS's address,
    the pods' nameserver), ``registry_host`` (what images are pulled as, e.g.
    ``localhost:5000``).
    """

    cluster: KubeCluster
    dir: Path
    name: str = ""
    netns: str = ""
    ip: str = ""
    host_ip: str = ""
    pod_cidr: str = ""
    dns: str = ""
    registry_host: str = ""
    cgroup_root: str = ""
    _procs: list[_Proc] = field(default_factory=list, repr=False)
    _sysctls: dict[str, str] = field(default_factory=dict, repr=False)
    _veth: str = ""
    _route: str = ""
    _binaries: dict[str, Path] = field(default_factory=dict, repr=False)

    # ----------------------------------------------------------------- start

    @classmethod
    def start(cls, cluster: KubeCluster, workdir: Path, *, registry_port: int, timeout: float = 180.0,
              sandbox_image: str = "") -> "KubeNode":  # fmt: skip
        """Start a node whose containerd pulls ``localhost:registry_port/…`` from this machine's
        registry on that port (listening on all addresses); ``sandbox_image`` is the pause image
        (``localhost:PORT/pause:TAG``, already pushed there)."""
        problems = []
        if os.geteuid() != 0:
            problems.append("a node needs root (network namespace, mounts, cgroups)")
        for program in ("ip", "nsenter", "iptables", "runc", "mount", "umount"):
            if shutil.which(program) is None:
                problems.append(f"the {program} command is not installed (tools/setup.sh installs it)")
        if not cluster.advertise_address:
            problems.append("the cluster has no advertise address (this machine has no network address "
                            "but loopback), so a node in its own namespace cannot reach the API server")  # fmt: skip
        if problems:
            raise KubeNodeError("; ".join(problems))
        binaries = {name: find_binary(name) for name in NODE_BINARIES}
        node = cls(cluster=cluster, dir=Path(workdir), _binaries=binaries)
        node.dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        try:
            node._start(registry_port, sandbox_image, deadline)
        except BaseException:
            node.stop()
            raise
        return node

    def _start(self, registry_port: int, sandbox_image: str, deadline: float) -> None:
        suffix = uuid.uuid4().hex[:6]
        self.name = f"pd-node-{suffix}"
        self._network(suffix)
        self.registry_host = f"localhost:{registry_port}"
        self._install_cni()
        self._install_gvisor()
        self._start_containerd(registry_port, sandbox_image, deadline)
        self._start_coredns(deadline)
        self._start_kubelet(deadline)
        self._start_kube_proxy(deadline)

    def _network(self, suffix: str) -> None:
        link, pods = _free_subnets()
        hosts = list(link.hosts())
        self.host_ip, self.ip = str(hosts[0]), str(hosts[1])
        self.pod_cidr = str(pods)
        self.dns = self.ip
        self.netns = f"pdn{suffix}"
        self._veth = f"pdn{suffix}h"
        _run("ip", "netns", "add", self.netns)
        _run("ip", "link", "add", self._veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self._veth)
        _run("ip", "link", "set", self._veth, "up")
        for args in (("addr", "add", f"{self.ip}/30", "dev", "eth0"), ("link", "set", "eth0", "up"),
                     ("link", "set", "lo", "up"), ("route", "add", "default", "via", self.host_ip)):  # fmt: skip
            _run("ip", "-n", self.netns, *args)
        # The node routes between its pods' bridge and the wire; bridged pod-to-pod
        # traffic must pass iptables, or kube-proxy's DNAT replies bypass conntrack.
        for key in ("net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"):
            _run("ip", "netns", "exec", self.netns, "sysctl", "-q", "-w", key)
        # This machine reaches the pods (the API server's service proxy) through the node.
        _run("ip", "route", "add", self.pod_cidr, "via", self.ip)
        self._route = self.pod_cidr

    def _install_cni(self) -> None:
        bin_dir = self.dir / "cni" / "bin"
        conf_dir = self.dir / "cni" / "net.d"
        bin_dir.mkdir(parents=True)
        conf_dir.mkdir(parents=True)
        for plugin in ("bridge", "host-local", "loopback"):
            (bin_dir / plugin).symlink_to(self._binaries[plugin])
        gateway = str(next(ipaddress.ip_network(self.pod_cidr).hosts()))
        (conf_dir / "10-pipedreamer.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0",
            "name": "pipedreamer",
            "plugins": [{
                "type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
                "ipam": {"type": "host-local", "dataDir": str(self.dir / "cni" / "ipam"),
                         "ranges": [[{"subnet": self.pod_cidr, "gateway": gateway}]],
                         "routes": [{"dst": "0.0.0.0/0"}]},
            }],
        }, indent=2))  # fmt: skip

    def _install_gvisor(self) -> None:
        """deploy/gvisor/install.sh, offline, into this node's bin and containerd drop-in directories."""
        stage = self.dir / "gvisor-release"
        stage.mkdir()
        for name in ("runsc", "containerd-shim-runsc-v1"):
            shutil.copy2(self._binaries[name], stage / name)
            (stage / f"{name}.sha512").write_text(f"{_sha512(stage / name)}  {name}\n")
        runsc_config = self.dir / "runsc.toml"
        runsc_config.write_text(
            f'binary_name = "{self.dir / "bin" / "runsc"}"\n'
            f'root = "{self.dir / "runsc-root"}"\n'
            "[runsc_config]\n"
            f'  debug-log = "{self.dir / "runsc-logs"}/"\n'
        )
        env = {**os.environ, "GVISOR_BIN_DIR": str(stage), "INSTALL_DIR": str(self.dir / "bin"),
               "CONTAINERD_CONFIG_D": str(self.dir / "containerd.d"), "CONTAINERD": str(self._binaries["containerd"]),
               "RUNSC_CONFIG": str(runsc_config)}  # fmt: skip
        for attempt in (1, 2):
            proc = _run("bash", str(INSTALL_GVISOR), env=env, check=False, timeout=120)
            (self.dir / f"install-gvisor-{attempt}.log").write_text(proc.stderr)
            if proc.returncode != 0:
                raise KubeNodeError(f"deploy/gvisor/install.sh failed ({proc.returncode}):\n{proc.stderr}")
        self.install_log = (self.dir / "install-gvisor-1.log").read_text()
        self.reinstall_log = (self.dir / "install-gvisor-2.log").read_text()

    def _nsenter(self, name: str, argv: list[str], env: dict | None = None) -> _Proc:
        log = self.dir / f"{name}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.netns}", "--", *argv],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=self.dir,
                env=env, preexec_fn=_die_with_parent,
            )  # fmt: skip
        proc = _Proc(name, popen, log)
        self._procs.append(proc)
        return proc

    def _wait(self, what: str, proc: _Proc, ready, deadline: float) -> None:
        last = ""
        while True:
            if proc.popen.poll() is not None:
                raise KubeNodeError(f"{proc.name} exited with status {proc.popen.returncode} before {what}\n"
                                    f"--- last lines of {proc.log}:\n{_tail(proc.log)}")  # fmt: skip
            try:
                if ready():
                    return
            except (OSError, ValueError, KubeClusterError) as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise KubeNodeError(f"{what}: not within the time allowed ({last})\n"
                                    f"--- last lines of {proc.log}:\n{_tail(proc.log)}")  # fmt: skip
            time.sleep(0.3)

    def _start_containerd(self, registry_port: int, sandbox_image: str, deadline: float) -> None:
        root = self.dir / "containerd"
        certs = root / "certs.d" / f"localhost:{registry_port}"
        certs.mkdir(parents=True)
        # The registry every node has on localhost, as deploy/zot's NodePort gives
        # a real cluster: here it is this machine's registry, across the veth.
        (certs / "hosts.toml").write_text(
            f'server = "http://localhost:{registry_port}"\n\n'
            f'[host."http://{self.host_ip}:{registry_port}"]\n'
            '  capabilities = ["pull", "resolve"]\n'
        )
        runc = shutil.which("runc")
        self.socket = root / "containerd.sock"
        self.cgroup_root = f"/pipedreamer-{self.name}"
        pinned = f"\n[plugins.'io.containerd.cri.v1.images'.pinned_images]\n  sandbox = '{sandbox_image}'\n" if sandbox_image else ""
        config = root / "config.toml"
        config.write_text(f"""version = 3
root = '{root / "root"}'
state = '{root / "state"}'
imports = ['{self.dir / "containerd.d"}/*.toml']

[grpc]
  address = '{self.socket}'
[ttrpc]
  address = '{root / "containerd.sock.ttrpc"}'
[debug]
  address = ''
[metrics]
  address = ''

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = '{root / "certs.d"}'
{pinned}
[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  # Pods' network namespaces under our state, not /var/run/netns: stop() removes them.
  netns_mounts_under_state_dir = true
  # Root here lacks CAP_SYS_RESOURCE, so no OOM score may go below containerd's
  # own (the kubelet asks -998 for pod sandboxes): as for rootless containerd.
  restrict_oom_score_adj = true
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ['{self.dir / "cni" / "bin"}']
  conf_dir = '{self.dir / "cni" / "net.d"}'
[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = 'runc'
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = 'io.containerd.runc.v2'
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  BinaryName = '{runc}'
  Root = '{self.dir / "runc-root"}'
  SystemdCgroup = false

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
""")
        env = {**os.environ, "PATH": f"{self.dir / 'bin'}:{self._binaries['containerd-shim-runc-v2'].parent}:{os.environ.get('PATH', '')}"}
        # The runc shim is looked up beside containerd's own binary and on PATH.
        (self.dir / "bin" / "containerd-shim-runc-v2").symlink_to(self._binaries["containerd-shim-runc-v2"])
        proc = self._nsenter("containerd", [str(self._binaries["containerd"]), "--config", str(config)], env)
        self._wait("containerd's socket", proc, self.socket.is_socket, deadline)

    def _start_coredns(self, deadline: float) -> None:
        rbac = "rbac.authorization.k8s.io/v1"
        role = {"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "pipedreamer-test:coredns"},
                "rules": [{"apiGroups": [""], "resources": ["services", "pods", "namespaces"], "verbs": ["list", "watch"]},
                          {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]}  # fmt: skip
        binding = {"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": "pipedreamer-test:coredns"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "pipedreamer-test:coredns"},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "pipedreamer-test:coredns"}]}  # fmt: skip
        for path, body in (("/apis/rbac.authorization.k8s.io/v1/clusterroles", role),
                           ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)):  # fmt: skip
            status, answer = self.cluster.request("POST", path, body)
            if status not in (201, 409):
                raise KubeNodeError(f"creating {body['kind']} for CoreDNS: {status} {answer}")
        kubeconfig = self._node_kubeconfig("coredns", "pipedreamer-test:coredns")
        corefile = self.dir / "Corefile"
        corefile.write_text(f""".:53 {{
    bind {self.ip}
    errors
    health {self.ip}:8080
    ready {self.ip}:8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} {self.cluster.context}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
""")
        proc = self._nsenter("coredns", [str(self._binaries["coredns"]), "-conf", str(corefile)])
        self._wait("CoreDNS ready", proc, lambda: _http_ok(f"http://{self.ip}:8181/ready"), deadline)

    def _node_kubeconfig(self, name: str, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A client kubeconfig whose server is the API server's address as seen from the node."""
        path = self.cluster.client_kubeconfig(f"{self.name}-{name}", user, groups)
        config = json.loads(path.read_text())
        port = self.cluster.server.rsplit(":", 1)[1]
        config["clusters"][0]["cluster"]["server"] = f"https://{self.cluster.advertise_address}:{port}"
        target = self.dir / f"kubeconfig-{name}.json"
        target.write_text(json.dumps(config, indent=2))
        target.chmod(0o600)
        return target

    def _start_kubelet(self, deadline: float) -> None:
        kubeconfig = self._node_kubeconfig("kubelet", f"system:node:{self.name}", ("system:nodes",))
        key, cert = self.cluster.issue_serving_cert(self.name, f"IP:{self.ip},DNS:{self.name}")
        resolv = self.dir / "resolv.conf"
        resolv.write_text("")  # pods get the cluster's DNS only; this machine's resolver is not theirs
        self._make_cgroup_root()
        for key_ in KUBELET_SYSCTLS:
            self._sysctls[key_] = Path("/proc/sys", key_).read_text().strip()
        config = self.dir / "kubelet.json"
        config.write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.ip,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "tlsCertFile": str(cert),
            "tlsPrivateKeyFile": str(key),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": self.cluster.ca_file}},
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            # This machine has the hybrid cgroup v1 layout (controllers on v1
            # hierarchies); Kubernetes 1.37 still runs there when told to.
            "failCgroupV1": False,
            "failSwapOn": False,
            "clusterDNS": [self.dns],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": str(resolv),
            "podLogsDir": str(self.dir / "pod-logs"),
            "volumePluginDir": str(self.dir / "volume-plugins"),
            "staticPodPath": "",
            "maxPods": 30,
            "serializeImagePulls": False,
            # A test machine's disk may be fuller than a node's usual thresholds allow.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "nodeStatusUpdateFrequency": "5s",
        }, indent=2))  # fmt: skip
        proc = self._nsenter("kubelet", [
            str(self._binaries["kubelet"]),
            f"--config={config}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={self.dir / 'kubelet'}",
            f"--hostname-override={self.name}",
            f"--node-ip={self.ip}",
            "--v=2",
        ])  # fmt: skip
        self._wait(f"node {self.name} Ready", proc, self._node_ready, deadline)

    def _make_cgroup_root(self) -> None:
        """The kubelet's cgroup parent, in every v1 hierarchy (the kubelet creates what is below it)."""
        for hierarchy in CGROUP_V1_ROOT.iterdir():
            if hierarchy.name == "unified" or not (hierarchy / "cgroup.procs").exists():
                continue
            top = hierarchy / self.cgroup_root.lstrip("/")
            top.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":  # a new cpuset has no CPUs nor memory nodes until given its parent's
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (top / knob).write_text((hierarchy / knob).read_text())

    def _node_ready(self) -> bool:
        status, body = self.cluster.request("GET", f"/api/v1/nodes/{self.name}")
        if status != 200:
            return False
        conditions = {c["type"]: c["status"] for c in body.get("status", {}).get("conditions", [])}
        if conditions.get("Ready") != "True":
            raise ValueError(f"node conditions: {conditions}")
        taints = body.get("spec", {}).get("taints") or []
        if taints:  # the node lifecycle controller lifts node.kubernetes.io/not-ready
            raise ValueError(f"node taints: {taints}")
        return True

    def _start_kube_proxy(self, deadline: float) -> None:
        kubeconfig = self._node_kubeconfig("kube-proxy", "system:kube-proxy")
        config = self.dir / "kube-proxy.json"
        config.write_text(json.dumps({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "mode": "iptables",
            "hostnameOverride": self.name,
            "clusterCIDR": self.pod_cidr,
            "bindAddress": self.ip,
            "healthzBindAddress": f"{self.ip}:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # 0: leave the machine-wide conntrack table size and timeouts alone.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }, indent=2))  # fmt: skip
        proc = self._nsenter("kube-proxy", [str(self._binaries["kube-proxy"]), f"--config={config}", "--v=2"])
        self._wait("kube-proxy healthy", proc, lambda: _http_ok(f"http://{self.ip}:10256/healthz"), deadline)

    # ------------------------------------------------------------ use / stop

    def assert_running(self) -> None:
        for proc in self._procs:
            if proc.popen.poll() is not None:
                raise KubeNodeError(f"{proc.name} has exited with status {proc.popen.returncode}; "
                                    f"last lines of {proc.log}:\n{_tail(proc.log)}")  # fmt: skip

    def runsc_containers(self) -> list[dict]:
        """What gVisor's runsc lists on this node (containerd's k8s.io namespace): id, status, pid, bundle."""
        root = self.dir / "runsc-root" / "k8s.io"
        if not root.is_dir():
            return []
        listed = _run(str(self.dir / "bin" / "runsc"), "--root", str(root), "list", "--format=json", check=False)
        return json.loads(listed.stdout or "[]") or [] if listed.returncode == 0 else []

    def log_tail(self, name: str, lines: int = 40) -> str:
        """Last lines of one part's log: ``kubelet``, ``containerd``, ``kube-proxy``, ``coredns``."""
        return _tail(self.dir / f"{name}.log", lines)

    def diagnostics(self) -> str:
        parts = [f"--- {p.name} ({p.log}):\n{_tail(p.log, 25)}" for p in self._procs]
        logs = sorted((self.dir / "runsc-logs").glob("*")) if (self.dir / "runsc-logs").exists() else []
        for path in logs[-4:]:
            lines = [line for line in path.read_text(errors="replace").splitlines() if line[:1] in "WE"]
            if lines:
                parts.append(f"--- {path.name} (warnings/errors):\n" + "\n".join(lines[-10:]))
        return "\n".join(parts)

    def stop(self, grace: float = 10.0) -> None:
        """Stop every part and remove what the node left: pods' containers, mounts, cgroups, network."""
        if self.name and self._procs:
            self._drain(deadline=time.monotonic() + 60)
        for proc in reversed(self._procs):
            if proc.popen.poll() is None:
                proc.popen.terminate()
                try:
                    proc.popen.wait(grace)
                except subprocess.TimeoutExpired:
                    proc.popen.kill()
                    proc.popen.wait()
        self._procs.clear()
        self._kill_leftovers()
        self._unmount_all()
        self._remove_cgroups()
        if self._route:
            _run("ip", "route", "del", self._route, check=False)
        if self._veth:
            _run("ip", "link", "del", self._veth, check=False)
        if self.netns:
            _run("ip", "netns", "del", self.netns, check=False)
        for key, value in self._sysctls.items():
            try:
                Path("/proc/sys", key).write_text(value)
            except OSError:
                pass
        self._sysctls.clear()
        if self.name:
            self.cluster.request("DELETE", f"/api/v1/nodes/{self.name}")

    def _drain(self, deadline: float) -> None:
        """Delete the node's pods and let its kubelet stop them, so containerd removes their sandboxes."""
        try:
            status, body = self.cluster.request("GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{self.name}")
            for pod in body.get("items", []) if status == 200 else []:
                meta = pod["metadata"]
                self.cluster.request("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                                     {"gracePeriodSeconds": 1})  # fmt: skip
            while time.monotonic() < deadline:
                status, body = self.cluster.request("GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{self.name}")
                if status != 200 or not body.get("items"):
                    break
                time.sleep(0.5)
            # The kubelet removes a stopped pod's sandbox shortly after the pod is gone.
            while time.monotonic() < deadline and list((self.dir / "containerd" / "state").glob(
                    "io.containerd.runtime.v2.task/k8s.io/*")):  # fmt: skip
                time.sleep(0.5)
        except (OSError, KubeClusterError):
            pass

    def _kill_leftovers(self) -> None:
        """Shims (and their containers) that outlived containerd: processes started for this node only."""
        marker = str(self.dir).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline and int(entry.name) != os.getpid():
                try:
                    os.kill(int(entry.name), 9)
                except OSError:
                    pass
        for root, binary in ((self.dir / "runc-root", shutil.which("runc")), (self.dir / "runsc-root", self.dir / "bin" / "runsc")):
            if not root.exists() or not binary:
                continue
            for namespace_root in [root, *[p for p in root.iterdir() if p.is_dir()]]:
                listed = _run(str(binary), "--root", str(namespace_root), "list", "-q", check=False)
                for container in listed.stdout.split() if listed.returncode == 0 else []:
                    _run(str(binary), "--root", str(namespace_root), "delete", "--force", container, check=False)

    def _unmount_all(self) -> None:
        prefix = str(self.dir) + "/"
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(prefix):
                mounts.append(point)
        for point in sorted(mounts, key=len, reverse=True):
            _run("umount", "-l", point, check=False)

    def _remove_cgroups(self, timeout: float = 15.0) -> None:
        """rmdir the kubelet's cgroups, deepest first; killed processes may take a moment to leave them."""
        if not self.cgroup_root:
            return
        tops = [h / self.cgroup_root.lstrip("/") for h in CGROUP_V1_ROOT.iterdir()] if CGROUP_V1_ROOT.exists() else []
        deadline = time.monotonic() + timeout
        while True:
            left = []
            for top in (t for t in tops if t.is_dir()):
                for directory in sorted([top, *(p for p in top.rglob("*") if p.is_dir())],
                                        key=lambda p: len(p.parts), reverse=True):  # fmt: skip
                    try:
                        directory.rmdir()
                    except OSError:
                        left.append(directory)
            if not left or time.monotonic() > deadline:
                return
            time.sleep(0.5)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except urllib.error.HTTPError:
        return False
