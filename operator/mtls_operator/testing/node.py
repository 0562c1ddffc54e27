"""A real node for the test control plane: kube-scheduler, containerd and a kubelet, pods that really run.

`Node.start(plane)` adds to a running `ControlPlane`:

* ``kube-scheduler`` (host network, ``127.0.0.1``), so Deployments, StatefulSets and DaemonSets get pods
  placed;
* a sealed network namespace ``mtls-<id>`` (see `mtls_operator.testing.netns`): ``lo``, the pod bridge
  ``mtls0`` with `POD_GATEWAY`, and the ``kubernetes`` Service's ClusterIP on ``lo``. It has no link to the
  host's network, so no pod, and nothing else on the node, can send a packet off this machine;
* two forwarders, the only doors: API server <- (kubelet on the namespace's ``127.0.0.1``, pods on the
  ClusterIP ``10.0.0.1:443``), and kubelet <- API server (logs, exec) on the host's ``127.0.0.1``;
* ``containerd`` and ``runc`` (Debian 12's packages: kubelet 1.36 still accepts containerd 1.6, falling
  back to its own cgroup driver setting because 1.6 lacks the RuntimeConfig call) in that namespace, with
  the CNI ``bridge`` plugin giving each pod its own network namespace and an address in `POD_CIDR`;
* the ``kubelet`` in that namespace, node name `NODE_NAME`, cgroup v1 (``cgroupfs`` driver,
  ``failCgroupV1: false``) under its own cgroup root, its own root, log and plugin directories;
* the images of `mtls_operator.testing.images` (pause and operator), imported into containerd.

Everything lives under ``<run dir>/node``; `Node.stop` stops the pods, the kubelet and containerd,
unmounts what they mounted, deletes the namespace and the cgroups, and keeps only ``node/logs``. The node
needs root (namespaces, mounts, cgroups); see docs/node.md for what the machine needs.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from mtls_operator.testing import controlplane as cp
from mtls_operator.testing.images import BuiltImage, ImageError, build_all, cache_dir
from mtls_operator.testing.netns import enter_netns, netns_path

__all__ = [
    "KUBELET_FEATURE_GATES",
    "NODE_NAME",
    "POD_CIDR",
    "TAINT",
    "TOLERATION",
    "Node",
    "NodeError",
    "NodeMissingError",
    "NodeState",
    "cgroup_v1_hierarchies",
    "find_node_binaries",
    "in_node_netns",
    "node_prerequisites",
    "read_node_state",
    "stop_recorded_node",
    "sweep_abandoned_nodes",
]

# The kubelet reports its Hostname address as the node name; the API server is told to prefer that
# address type, so its calls to the kubelet (logs, exec) go to localhost, where a forwarder waits.
NODE_NAME: Final = "localhost"
POD_CIDR: Final = "10.213.0.0/24"
POD_GATEWAY: Final = "10.213.0.1"
BRIDGE: Final = "mtls0"
KUBELET_FEATURE_GATES: Final = cp.FEATURE_GATES
NODE_STATE_FILE: Final = "node.json"
# The pytest node is tainted: only pods that tolerate this run on it, so the suites written for a
# control plane without a node (their pods stay Pending) see no change. `make cluster-up` has no taint.
TAINT_KEY: Final = "mtls.dev/test-node"
TAINT: Final = f"{TAINT_KEY}=true:NoSchedule"
TOLERATION: Final = {"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
_POLL: Final = 0.2

T = TypeVar("T")


class NodeError(cp.ControlPlaneError):
    """The node could not be started or stopped; the message says why."""


class NodeMissingError(NodeError):
    """Something the node needs is not installed or built: the message names the make target."""


# --------------------------------------------------------------------------------------------------
# What the node needs


@dataclass(frozen=True)
class NodeBinaries:
    kubelet: Path
    kube_scheduler: Path
    pause: Path
    containerd: Path
    ctr: Path
    runc: Path
    cni_bin_dir: Path


def find_node_binaries(bin_dir: Path | None = None) -> NodeBinaries:
    """The node's binaries, or `NodeMissingError` naming what is missing and how to get it."""
    directory = bin_dir if bin_dir is not None else cp.default_bin_dir()
    missing: list[str] = []
    built = {name: directory / name for name in ("kubelet", "kube-scheduler")}
    missing += [f"{p} (make node)" for p in built.values() if not os.access(p, os.X_OK)]
    pause = cache_dir() / "bin" / "pause"
    if not os.access(pause, os.X_OK):
        missing.append(f"{pause} (make node)")
    system = {name: shutil.which(name) for name in ("containerd", "ctr", "runc", "nsenter", "ip")}
    missing += [f"{name} (make node-deps)" for name, path in system.items() if path is None]
    cni = Path("/usr/lib/cni")
    if not (cni / "bridge").is_file():
        missing.append(f"{cni}/bridge (make node-deps: containernetworking-plugins)")
    if missing:
        raise NodeMissingError("the test node is missing: " + ", ".join(missing))
    return NodeBinaries(
        kubelet=built["kubelet"],
        kube_scheduler=built["kube-scheduler"],
        pause=pause,
        containerd=Path(str(system["containerd"])),
        ctr=Path(str(system["ctr"])),
        runc=Path(str(system["runc"])),
        cni_bin_dir=cni,
    )


def cgroup_v1_hierarchies(mountinfo: str) -> list[Path]:
    """The cgroup v1 hierarchies (one mount point each) in a /proc/self/mountinfo text."""
    found: list[Path] = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and tail and tail[0] == "cgroup":
            found.append(Path(fields[4]))
    return found


def node_prerequisites() -> list[str]:
    """Why a node cannot run on this machine (empty when it can): root, cgroups, network namespaces."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("the node needs root (network namespaces, mounts, cgroups)")
    mountinfo = Path("/proc/self/mountinfo").read_text()
    if not cgroup_v1_hierarchies(mountinfo) and not (CGROUP_ROOT / "cgroup.controllers").exists():
        problems.append("no cgroup hierarchy is mounted under /sys/fs/cgroup")
    return problems


# --------------------------------------------------------------------------------------------------
# State


@dataclass(frozen=True)
class NodeState:
    """What node.json records, so that `down` (even from another process) can stop and clean the node."""

    node_dir: str
    netns: str
    cgroup_root: str
    containerd_socket: str
    components: tuple[cp.ComponentState, ...] = ()

    def to_json(self) -> str:
        return json.dumps({**vars(self), "components": [vars(c) for c in self.components]}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> NodeState:
        raw = json.loads(text)
        return cls(
            node_dir=str(raw["node_dir"]),
            netns=str(raw["netns"]),
            cgroup_root=str(raw["cgroup_root"]),
            containerd_socket=str(raw["containerd_socket"]),
            components=tuple(cp.ComponentState(**c) for c in raw["components"]),
        )


def read_node_state(run_dir: Path) -> NodeState | None:
    try:
        return NodeState.from_json((run_dir / NODE_STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------------------------------
# Small helpers


def _run(argv: Sequence[str], what: str, *, check: bool = True, timeout: float = 60.0) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as error:
        raise NodeError(f"{what}: `{' '.join(argv)}` did not finish in {timeout:.0f}s") from error
    if check and result.returncode != 0:
        raise NodeError(f"{what}: `{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def _wait(predicate: Callable[[], T | None], deadline: float, what: str, details: Callable[[], str]) -> T:
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise NodeError(f"{what} before the deadline\n{details()}")
        time.sleep(_POLL)


def in_node_netns(netns: str, make: Callable[[], T]) -> T:
    """Run `make` (e.g. make a socket) in a thread inside the node's network namespace; return its result.

    A socket keeps the namespace it was made in, so a test can then connect it to a pod's address from
    any thread. Use this for every connection to a pod: the pod network exists only in that namespace.
    """
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            enter_netns(netns_path(netns))
            box["value"] = make()
        except BaseException as error:  # handed to the caller below
            box["error"] = error

    thread = threading.Thread(target=work, name=f"in-{netns}")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4].replace("\\040", " ")
        if mount_point.startswith(prefix) or mount_point == str(root):
            found.append(mount_point)
    return found


def _unmount_all(root: Path) -> None:
    for _ in range(5):
        mounts = _mounts_under(root)
        if not mounts:
            return
        for mount_point in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)


def _processes_mentioning(needle: str) -> list[int]:
    """Pids whose command line contains `needle` (the shims of our containerd name its socket)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            pids.append(int(proc.name))
    return pids


def _kill_pids(pids: Sequence[int], timeout: float = 5.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(cp.process_alive(pid) for pid in pids):
        time.sleep(0.05)


def _remove_cgroups(cgroup_root: str) -> None:
    """rmdir the node's cgroup tree in every hierarchy, deepest first (only empty cgroups can go)."""
    relative = cgroup_root.strip("/")
    if not relative:
        return
    for hierarchy in [
        *cgroup_v1_hierarchies(Path("/proc/self/mountinfo").read_text()),
        CGROUP_ROOT / "unified",
    ]:
        top = hierarchy / relative
        if not top.is_dir():
            continue
        for dirpath, _, _ in sorted(os.walk(top), key=lambda entry: len(entry[0]), reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def _kill_cgroup_members(cgroup_root: str) -> None:
    """SIGKILL every process left in the node's cgroups (containers whose shim is already gone)."""
    relative = cgroup_root.strip("/")
    if not relative:
        return
    pids: set[int] = set()
    for hierarchy in cgroup_v1_hierarchies(Path("/proc/self/mountinfo").read_text()):
        top = hierarchy / relative
        if top.is_dir():
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(line) for line in procs.read_text().split())
    _kill_pids(sorted(pids))


def _make_cgroups(cgroup_root: str) -> None:
    """Create the kubelet's cgroup root in every v1 hierarchy (it refuses a root that does not exist)."""
    for hierarchy in cgroup_v1_hierarchies(Path("/proc/self/mountinfo").read_text()):
        path = hierarchy / cgroup_root.strip("/")
        path.mkdir(exist_ok=True)
        # A new cpuset cgroup starts with no CPUs and no memory nodes; give it its parent's.
        for name in ("cpuset.cpus", "cpuset.mems"):
            parent, child = hierarchy / name, path / name
            if parent.exists() and child.exists() and not child.read_text().strip():
                child.write_text(parent.read_text())


def _delete_netns(name: str) -> None:
    if netns_path(name).exists():
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


def _host_blackholes(add: bool) -> None:
    """Blackhole routes in the host's namespace for the pod and Service ranges: a mistake that targets a
    pod or Service address from the host fails here instead of leaving the machine by the default route.

    Only where the default route is all that matches: a machine whose own network uses these ranges
    keeps its routes (and its traffic there is its own business).
    """
    for cidr in (POD_CIDR, cp.SERVICE_CLUSTER_IP_RANGE):
        if add:
            matching = _run(["ip", "-o", "route", "show", "match", cidr], "routes", check=False)
            if any(line.split()[0] not in ("default", "blackhole") for line in matching.splitlines() if line):
                continue
            subprocess.run(["ip", "route", "add", "blackhole", cidr], capture_output=True, check=False)
        else:
            subprocess.run(["ip", "route", "delete", "blackhole", cidr], capture_output=True, check=False)


# Every running node leaves a note here naming its run directory, so that the next start can clean up
# after a run that was killed before it could (its pods, mounts, namespace and cgroups outlive it).
REGISTRY: Final = Path("/run/mtls-operator-nodes")


def _register(run_dir: Path, netns: str) -> None:
    REGISTRY.mkdir(parents=True, exist_ok=True)
    (REGISTRY / netns).write_text(str(run_dir))


def sweep_abandoned_nodes() -> list[str]:
    """Stop and clean every registered node whose kubelet is dead (its run was killed); returns their
    run directories."""
    swept = []
    for note in sorted(REGISTRY.glob("mtls-node-*")) if REGISTRY.is_dir() else []:
        run_dir = Path(note.read_text().strip())
        state = read_node_state(run_dir)
        kubelet = next((c for c in state.components if c.name == "kubelet"), None) if state else None
        if state is not None and kubelet is not None and cp.process_alive(kubelet.pid, kubelet.exe):
            continue
        if state is not None:
            stop_recorded_node(run_dir)
        else:
            _delete_netns(note.name)
        note.unlink(missing_ok=True)
        swept.append(str(run_dir))
    return swept


def stop_recorded_node(run_dir: Path, timeout: float = 15.0) -> list[str]:
    """Stop and clean the node recorded in `run_dir` (if any); returns components that would not stop."""
    state = read_node_state(run_dir)
    if state is None:
        return []
    node_dir = Path(state.node_dir)
    socket_path = state.containerd_socket
    components = list(state.components)
    by_name = {c.name: c for c in components}
    stubborn: list[str] = []
    # The kubelet first, so it does not restart what is stopped next.
    if "kubelet" in by_name:
        stubborn += cp._terminate([by_name["kubelet"]], timeout)
    if "containerd" in by_name and cp.process_alive(by_name["containerd"].pid) and Path(socket_path).exists():
        ctr = shutil.which("ctr") or "ctr"
        base = [ctr, "--address", socket_path, "--namespace", "k8s.io"]
        with contextlib.suppress(NodeError):
            tasks = _run([*base, "tasks", "ls", "-q"], "list tasks", timeout=20).split()
            for task in tasks:
                _run([*base, "tasks", "kill", "-s", "SIGKILL", task], "kill task", check=False, timeout=20)
            for task in tasks:
                _run([*base, "tasks", "delete", "-f", task], "delete task", check=False, timeout=20)
    rest = [c for c in components if c.name != "kubelet"]
    stubborn += cp._terminate(rest, timeout)
    # Shims outlive containerd; they name its socket on their command line.
    _kill_pids(_processes_mentioning(f"-address {socket_path}"))
    _kill_cgroup_members(state.cgroup_root)
    _unmount_all(node_dir)
    _delete_netns(state.netns)
    _remove_cgroups(state.cgroup_root)
    for link in Path("/var/log/containers").glob("*.log") if Path("/var/log/containers").is_dir() else []:
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(str(node_dir)):
                link.unlink()
    if not any(netns_path("x").parent.glob("mtls-node-*")):
        _host_blackholes(add=False)
    if not stubborn:
        (REGISTRY / state.netns).unlink(missing_ok=True)
        for sub in node_dir.iterdir() if node_dir.is_dir() else []:
            if sub.name not in ("logs", "pod-logs"):
                shutil.rmtree(sub, ignore_errors=True)
        (run_dir / NODE_STATE_FILE).unlink(missing_ok=True)
    return stubborn


# --------------------------------------------------------------------------------------------------
# The node


@dataclass
class Node:
    """A running node attached to a control plane. Make one with `Node.start`."""

    plane: cp.ControlPlane
    node_dir: Path
    netns: str
    cgroup_root: str
    containerd_socket: Path
    images: dict[str, BuiltImage] = field(default_factory=dict)
    components: list[cp.ComponentState] = field(default_factory=list)
    started_in: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    _popens: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    @property
    def operator_image(self) -> str:
        return self.images["operator"].ref

    @property
    def name(self) -> str:
        return NODE_NAME

    def in_netns(self, make: Callable[[], T]) -> T:
        """See `in_node_netns`."""
        return in_node_netns(self.netns, make)

    def connect(self, host: str, port: int, timeout: float = 5.0) -> socket.socket:
        """A TCP connection to a pod address (made inside the node's namespace)."""

        def make() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            return sock

        sock = self.in_netns(make)
        try:
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def container_pid(self, container_id: str) -> int:
        """The host pid of a running container's main process (``containerd://`` prefix allowed)."""
        task = container_id.removeprefix("containerd://")
        ctr = [str(shutil.which("ctr") or "ctr"), "--address", str(self.containerd_socket), "-n", "k8s.io"]
        for line in _run([*ctr, "tasks", "ls"], "list tasks").splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 2 and fields[0] == task:
                return int(fields[1])
        raise NodeError(f"no running task {task} on the node")

    def log_dir(self) -> Path:
        return self.node_dir / "logs"

    def pod_logs(self, namespace: str, pod: str) -> str:
        """The container logs of a pod, read from the node's disk (no API server -> kubelet call)."""
        out = []
        for path in sorted((self.node_dir / "pod-logs").glob(f"{namespace}_{pod}_*/*/*.log")):
            out.append(f"--- {path.parent.name}/{path.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(out)

    def format_log_tails(self, lines: int = 30) -> str:
        return "\n".join(
            f"----- {c.name} (last lines) -----\n{cp._tail(Path(c.log), lines)}" for c in self.components
        )

    # ---- start

    @classmethod
    def start(
        cls,
        plane: cp.ControlPlane,
        *,
        bin_dir: Path | None = None,
        timeout: float = 180.0,
        die_with_parent: bool = False,
        taint: bool = False,
    ) -> Node:
        """Start the node next to `plane` and wait until it is Ready with its images imported.

        Raises `NodeMissingError` when something is not installed or built, `NodeError` (with log tails)
        when a part does not come up; on failure everything started is stopped and cleaned.
        """
        began = time.monotonic()
        deadline = began + timeout
        problems = node_prerequisites()
        if problems:
            raise NodeMissingError("; ".join(problems))
        binaries = find_node_binaries(bin_dir)
        run = plane.run_dir
        sweep_abandoned_nodes()
        if read_node_state(run) is not None:
            stop_recorded_node(run)
        node_dir = run / "node"
        for sub in ("containerd", "kubelet", "cni", "pod-logs", "config", "logs"):
            shutil.rmtree(node_dir / sub, ignore_errors=True)
            (node_dir / sub).mkdir(parents=True)
        ident = hashlib.sha256(str(run).encode()).hexdigest()[:8]
        node = cls(
            plane=plane,
            node_dir=node_dir,
            netns=f"mtls-node-{ident}",
            cgroup_root=f"/mtls-node-{ident}",
            containerd_socket=node_dir / "containerd" / "containerd.sock",
        )
        try:
            step = time.monotonic()
            node.images = build_all(binaries.pause)
            node.timings["images"] = time.monotonic() - step
            node._start_all(binaries, deadline, die_with_parent, taint)
        except ImageError as error:
            node.stop()
            raise NodeMissingError(f"the node's images could not be built: {error}") from error
        except BaseException:
            with contextlib.suppress(Exception):
                node.stop()
            raise
        node.started_in = time.monotonic() - began
        return node

    def _record(self) -> None:
        state = NodeState(
            node_dir=str(self.node_dir),
            netns=self.netns,
            cgroup_root=self.cgroup_root,
            containerd_socket=str(self.containerd_socket),
            components=tuple(self.components),
        )
        tmp = self.plane.run_dir / (NODE_STATE_FILE + ".tmp")
        tmp.write_text(state.to_json())
        tmp.replace(self.plane.run_dir / NODE_STATE_FILE)

    def _spawn(
        self, name: str, argv: Sequence[str], die_with_parent: bool, health: str = ""
    ) -> subprocess.Popen[bytes]:
        log_path = self.node_dir / "logs" / f"{name}.log"
        with log_path.open("ab") as log:
            started = f"{datetime.datetime.now(datetime.UTC):%H:%M:%S}"
            log.write(f"===== {started} starting {name}: {' '.join(argv)}\n".encode())
            log.flush()
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.node_dir,
                start_new_session=True,
                preexec_fn=cp._die_with_parent if die_with_parent else None,
            )
        self._popens.append(popen)
        # nsenter execs the real program: that is what /proc/<pid>/cmdline names, and what `down` checks.
        exe = argv[argv.index("--") + 1] if "--" in argv else argv[0]
        self.components.append(
            cp.ComponentState(name=name, pid=popen.pid, exe=exe, log=str(log_path), health=health)
        )
        self._record()
        return popen

    def _alive_or_fail(self, name: str, popen: subprocess.Popen[bytes]) -> None:
        if popen.poll() is not None:
            log = self.node_dir / "logs" / f"{name}.log"
            raise NodeError(f"{name} exited with code {popen.returncode}; log {log}:\n{cp._tail(log, 40)}")

    def _start_all(self, binaries: NodeBinaries, deadline: float, die_with_parent: bool, taint: bool) -> None:
        pki = self._make_pki()
        config = self.node_dir / "config"
        api_host, _, api_port = self.plane.server.removeprefix("https://").rpartition(":")
        timings = self.timings

        # 1. kube-scheduler, on the host's loopback like the rest of the control plane.
        step = time.monotonic()
        (sched_port,) = cp.pick_free_ports(1)
        scheduler_kubeconfig = config / "kube-scheduler.kubeconfig"
        self._kubeconfig(scheduler_kubeconfig, self.plane.server, pki["scheduler"], "system:kube-scheduler")
        scheduler = self._spawn(
            "kube-scheduler",
            [
                str(binaries.kube_scheduler),
                f"--kubeconfig={scheduler_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
            die_with_parent,
            health=f"https://127.0.0.1:{sched_port}/healthz",
        )

        # 2. The sealed network namespace, and the forwarders through its only doors.
        self._make_netns()
        (kubelet_port,) = cp.pick_free_ports(1)
        forward = [sys.executable, "-m", "mtls_operator.testing.netns", "forward"]
        to_api = self._spawn(
            "forward-apiserver",
            [
                *forward,
                f"--listen-netns={self.netns}",
                f"--listen=127.0.0.1:{api_port}",
                f"--listen={self._cluster_ip()}:443",
                f"--to={api_host}:{api_port}",
            ],
            die_with_parent,
        )
        to_kubelet = self._spawn(
            "forward-kubelet",
            [
                *forward,
                f"--listen=127.0.0.1:{kubelet_port}",
                f"--to-netns={self.netns}",
                f"--to=127.0.0.1:{kubelet_port}",
            ],
            die_with_parent,
        )

        # 3. containerd in the namespace.
        nsenter = [str(shutil.which("nsenter")), f"--net={netns_path(self.netns)}", "--"]
        containerd_config = self._containerd_config(binaries)
        containerd = self._spawn(
            "containerd",
            [*nsenter, str(binaries.containerd), "--config", str(containerd_config)],
            die_with_parent,
        )
        ctr = [str(binaries.ctr), "--address", str(self.containerd_socket), "--namespace", "k8s.io"]

        def containerd_up() -> bool:
            self._alive_or_fail("containerd", containerd)
            if not self.containerd_socket.exists():
                return False
            return (
                subprocess.run([*ctr, "version"], capture_output=True, check=False, timeout=10).returncode
                == 0
            )

        _wait(containerd_up, deadline, "containerd did not answer", lambda: self.format_log_tails())
        timings["containerd"] = time.monotonic() - step

        step = time.monotonic()
        for image in self.images.values():
            _run(
                [*ctr, "images", "import", str(image.archive)],
                f"import {image.ref}",
                timeout=max(30.0, deadline - time.monotonic()),
            )
        timings["import"] = time.monotonic() - step

        # 4. The kubelet in the namespace.
        step = time.monotonic()
        _make_cgroups(self.cgroup_root)
        kubelet_config = self._kubelet_config(kubelet_port)
        kubelet_kubeconfig = config / "kubelet.kubeconfig"
        # The kubelet reaches the API server at the same address as on the host: the forwarder's.
        self._kubeconfig(kubelet_kubeconfig, self.plane.server, pki["kubelet"], f"system:node:{NODE_NAME}")
        kubelet = self._spawn(
            "kubelet",
            [
                *nsenter,
                str(binaries.kubelet),
                f"--config={kubelet_config}",
                f"--kubeconfig={kubelet_kubeconfig}",
                f"--root-dir={self.node_dir / 'kubelet'}",
                f"--cert-dir={self.node_dir / 'kubelet' / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={POD_GATEWAY}",
                *([f"--register-with-taints={TAINT}"] if taint else []),
                "--v=1",
            ],
            die_with_parent,
        )

        def node_ready() -> bool:
            for name, popen in (
                ("kubelet", kubelet),
                ("containerd", containerd),
                ("kube-scheduler", scheduler),
                ("forward-apiserver", to_api),
                ("forward-kubelet", to_kubelet),
            ):
                self._alive_or_fail(name, popen)
            status, body = self.plane._get(f"/api/v1/nodes/{NODE_NAME}")
            if status != 200:
                return False
            conditions = json.loads(body).get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        _wait(node_ready, deadline, f"node {NODE_NAME} did not become Ready", lambda: self.format_log_tails())
        sched_ok = _wait(
            lambda: self._scheduler_healthy(sched_port, scheduler),
            deadline,
            "kube-scheduler did not become healthy",
            lambda: self.format_log_tails(),
        )
        assert sched_ok
        timings["kubelet"] = time.monotonic() - step

    def _scheduler_healthy(self, port: int, popen: subprocess.Popen[bytes]) -> bool:
        self._alive_or_fail("kube-scheduler", popen)
        context = cp._client_context(cp._Pki(self.plane.run_dir / "pki"))
        context.check_hostname = False
        import ssl

        context.verify_mode = ssl.CERT_NONE  # the scheduler serves a self-signed certificate
        try:
            status, _ = cp._https_get("127.0.0.1", port, "/healthz", context)
        except OSError:
            return False
        return status == 200

    # ---- pieces

    def _cluster_ip(self) -> str:
        import ipaddress

        return str(next(ipaddress.ip_network(cp.SERVICE_CLUSTER_IP_RANGE).hosts()))

    def _make_netns(self) -> None:
        name = self.netns
        _delete_netns(name)
        _register(self.plane.run_dir, name)
        _run(["ip", "netns", "add", name], "create the node's network namespace")
        ip = ["ip", "-n", name]
        _run([*ip, "link", "set", "lo", "up"], "lo up")
        # The ClusterIP of the `kubernetes` Service is served in here, by the forwarder.
        _run([*ip, "addr", "add", f"{self._cluster_ip()}/32", "dev", "lo"], "ClusterIP on lo")
        _run([*ip, "link", "add", BRIDGE, "type", "bridge"], "pod bridge")
        _run([*ip, "addr", "add", f"{POD_GATEWAY}/24", "dev", BRIDGE], "pod gateway address")
        _run([*ip, "link", "set", BRIDGE, "up"], "pod bridge up")
        for key in ("all", "default"):
            _run(
                ["ip", "netns", "exec", name, "sysctl", "-q", "-w", f"net.ipv6.conf.{key}.disable_ipv6=1"],
                "no IPv6 in the node namespace",
                check=False,
            )
        _host_blackholes(add=True)

    def _make_pki(self) -> dict[str, tuple[Path, Path]]:
        pki_dir = self.plane.run_dir / "pki"
        ca_cert = x509.load_pem_x509_certificate((pki_dir / "ca.crt").read_bytes())
        ca_key = serialization.load_pem_private_key((pki_dir / "ca.key").read_bytes(), password=None)
        now = datetime.datetime.now(datetime.UTC)
        out: dict[str, tuple[Path, Path]] = {}
        for name, cn, org in (
            ("kubelet", f"system:node:{NODE_NAME}", "system:nodes"),
            ("scheduler", "system:kube-scheduler", None),
        ):
            key, cert = cp._issue(
                ca_key=ca_key,  # type: ignore[arg-type]
                ca_cert=ca_cert,
                subject=cp._name(cn, org),
                usage=ExtendedKeyUsageOID.CLIENT_AUTH,
                now=now,
            )
            cert_path, key_path = pki_dir / f"{name}.crt", pki_dir / f"{name}.key"
            cp._write(key_path, cp._key_pem(key))
            cp._write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
            out[name] = (cert_path, key_path)
        return out

    def _kubeconfig(self, path: Path, server: str, cred: tuple[Path, Path], user: str) -> None:
        cp._write(
            path,
            cp.render_kubeconfig(
                server=server,
                ca_pem=(self.plane.run_dir / "pki" / "ca.crt").read_bytes(),
                cert_pem=cred[0].read_bytes(),
                key_pem=cred[1].read_bytes(),
                user=user,
            ).encode(),
        )

    def _containerd_config(self, binaries: NodeBinaries) -> Path:
        root = self.node_dir / "containerd"
        cni = self.node_dir / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "mtls-pods",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": POD_GATEWAY}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(cni / "ipam"),
                    },
                },
                {"type": "loopback"},
            ],
        }
        (cni / "net.d" / "10-mtls-pods.conflist").write_text(json.dumps(conflist, indent=2))
        pause_ref = self.images["pause"].ref
        text = f"""\
version = 2
root = "{root / "root"}"
state = "{root / "state"}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.opt",
]
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_ref}"
  enable_selinux = false
  disable_apparmor = true
  # This machine's root lacks CAP_SYS_RESOURCE, so it may not lower oom_score_adj below its own;
  # without this runc fails with "failed to update /proc/self/oom_score_adj: Permission denied".
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{binaries.runc}"
        Root = "{root / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{binaries.cni_bin_dir}"
    conf_dir = "{cni / "net.d"}"
"""
        path = self.node_dir / "config" / "containerd.toml"
        path.write_text(text)
        return path

    def _kubelet_config(self, port: int) -> Path:
        pki = self.plane.run_dir / "pki"
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # The kubelet listens on the namespace's loopback; the API server reaches it through the
            # forward-kubelet forwarder on the host's 127.0.0.1:<port> (node address type Hostname).
            "address": "127.0.0.1",
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 0,
            "cgroupDriver": "cgroupfs",
            # Kubernetes 1.35+ refuses cgroup v1 unless told otherwise; this machine has v1 (hybrid).
            "failCgroupV1": False,
            "cgroupRoot": self.cgroup_root,
            "cgroupsPerQOS": True,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            # No cluster DNS: there is none, and none may be reached; pods use dnsPolicy Default.
            "resolvConf": "",
            "podLogsDir": str(self.node_dir / "pod-logs"),
            "volumePluginDir": str(self.node_dir / "kubelet" / "volume-plugins"),
            "failSwapOn": False,
            "registerNode": True,
            "serializeImagePulls": False,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
            },
            # The images were imported, not pulled: never garbage-collect them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "syncFrequency": "10s",
            "featureGates": dict(
                (gate.split("=")[0], gate.split("=")[1] == "true")
                for gate in KUBELET_FEATURE_GATES.split(",")
            ),
        }
        path = self.node_dir / "config" / "kubelet.yaml"
        path.write_text(json.dumps(config, indent=2))
        return path

    # ---- stop

    def stop(self, timeout: float = 15.0) -> None:
        stubborn = stop_recorded_node(self.plane.run_dir, timeout)
        for popen in self._popens:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=1.0)
        self._popens.clear()
        if stubborn:
            raise NodeError(f"could not stop {', '.join(stubborn)} of the node in {self.node_dir}")


@contextlib.contextmanager
def running_node(plane: cp.ControlPlane, **kwargs: Any) -> Iterator[Node]:
    node = Node.start(plane, **kwargs)
    try:
        yield node
    finally:
        node.stop()
