"""A real, throwaway Kubernetes control plane for tests and `make cluster-up`.

It runs etcd, kube-apiserver and kube-controller-manager from the binaries that `make controlplane`
builds (see e2e/controlplane/build.sh), on free loopback ports, with a fresh CA made here. Alone it has
no kubelet and no scheduler: Pods stay Pending, but everything the operator relies on is real: RBAC,
admission, CRDs with subresources, optimistic concurrency, and the Deployment -> ReplicaSet -> Pod
controllers. `mtls_operator.testing.node` adds a scheduler and a kubelet whose pods really run
(``up --node``, and the pytest ``node`` fixture).

Used two ways:

* from Python (the pytest fixtures): ``with ControlPlane.start(run_dir) as cp: ...``;
* from the shell: ``python -m mtls_operator.testing.controlplane up|down|status --dir .local``.
  ``up`` leaves the components running in their own sessions and records them in ``state.json``;
  ``down`` stops them, even from another shell.

Everything the run makes lives in the run directory: ``pki/``, ``etcd/`` (data), ``logs/`` (one log per
component, and with ``audit=True`` the API server's audit log ``logs/audit.log``), ``kubeconfig`` (admin,
``system:masters``) and ``state.json``; stopping keeps only ``logs/``.
Every wait has a deadline: a component that does not become healthy in time raises `ControlPlaneError`
carrying the tail of its log, and a port taken between picking and binding is answered with new ports.

This test harness is not one of the operator's layers; it makes its throwaway CA with `cryptography`
itself rather than through `mtls_operator.pki`, so that it never depends on the code under test.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import fcntl
import http.client
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "AUDITED_GROUP",
    "Binaries",
    "BinariesMissingError",
    "ControlPlane",
    "ControlPlaneError",
    "RunState",
    "audit_policy",
    "find_binaries",
    "k8s_version_from_go_mod",
    "main",
    "pick_free_ports",
    "port_in_use",
    "read_run_state",
    "render_kubeconfig",
]

SERVICE_CLUSTER_IP_RANGE: Final = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER: Final = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER: Final = "mtls-admin"
STATE_FILE: Final = "state.json"
COMPONENTS: Final = ("etcd", "kube-apiserver", "kube-controller-manager")
# Beta APIs and gates of Kubernetes 1.36 that are off by default and that the next issue builds on.
BETA_APIS: Final = (
    "certificates.k8s.io/v1beta1/clustertrustbundles",
    "certificates.k8s.io/v1beta1/podcertificaterequests",
)
RUNTIME_CONFIG: Final = ",".join(f"{api}=true" for api in BETA_APIS)
FEATURE_GATES: Final = "ClusterTrustBundle=true,ClusterTrustBundleProjection=true,PodCertificateRequest=true"
# The audit log (``ControlPlane.start(audit=True)``): every request of a client in this group is recorded,
# reads included (a test gives each operator it runs a client certificate carrying it); of the others,
# only writes.
AUDITED_GROUP: Final = "mtls.dev:audited"
AUDIT_LOG: Final = "audit.log"
# The control plane's own components write all the time (leases, the namespace and garbage collectors,
# Deployment controllers); no test counts their writes.
_UNAUDITED_USERS: Final = ("system:apiserver", "system:kube-controller-manager", "system:kube-scheduler")
WRITE_VERBS: Final = ("create", "update", "patch", "delete", "deletecollection")
# How often one component is relaunched on fresh ports when a port it was given is taken at bind time.
PORT_ATTEMPTS: Final = 5
_PORT_IN_USE = re.compile(r"address already in use|bind: address|EADDRINUSE", re.IGNORECASE)
_PROBE_TIMEOUT: Final = 1.0
_POLL_INTERVAL: Final = 0.2


class ControlPlaneError(RuntimeError):
    """The control plane could not be started, found or stopped; the message says why and what to do."""


class BinariesMissingError(ControlPlaneError):
    """The control-plane binaries have not been built: run `make controlplane`."""


class _PortInUseError(ControlPlaneError):
    """A component exited because a port it was given was taken between picking and binding."""


# --------------------------------------------------------------------------------------------------
# Binaries


def k8s_version_from_go_mod(text: str) -> str:
    """The k8s.io/kubernetes version required by a go.mod, in its one-line or its block form."""
    in_block = False
    for raw in text.splitlines():
        line = raw.split("//", 1)[0].strip()
        if in_block:
            if line == ")":
                in_block = False
                continue
            fields = line.split()
        elif line.startswith("require"):
            rest = line.removeprefix("require").strip()
            if rest == "(":
                in_block = True
                continue
            fields = rest.split()
        else:
            continue
        if len(fields) >= 2 and fields[0] == "k8s.io/kubernetes":
            return fields[1]
    raise ControlPlaneError("go.mod does not require k8s.io/kubernetes; cannot tell which binaries to use")


def _find_go_mod() -> Path | None:
    here = Path(__file__).resolve()
    for base in (*here.parents, Path.cwd(), *Path.cwd().parents):
        candidate = base / "e2e" / "controlplane" / "go.mod"
        if candidate.is_file():
            return candidate
    return None


def default_bin_dir() -> Path:
    """Where `make controlplane` puts the binaries (same rule as e2e/controlplane/build.sh).

    ``MTLS_CONTROLPLANE_BIN`` overrides it, for binaries built elsewhere.
    """
    override = os.environ.get("MTLS_CONTROLPLANE_BIN")
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("MTLS_CACHE")
    if cache:
        root = Path(cache).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "mtls-operator"
    go_mod = _find_go_mod()
    if go_mod is None:
        raise BinariesMissingError(
            "cannot find e2e/controlplane/go.mod to tell the Kubernetes version; run from the repository "
            "or set MTLS_CONTROLPLANE_BIN to the directory holding etcd and kube-apiserver"
        )
    return root / "controlplane" / k8s_version_from_go_mod(go_mod.read_text()) / "bin"


@dataclass(frozen=True)
class Binaries:
    bin_dir: Path
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path
    helm: Path | None


def find_binaries(bin_dir: Path | None = None) -> Binaries:
    """The control-plane binaries, or `BinariesMissingError` naming what is missing and the make target."""
    directory = bin_dir if bin_dir is not None else default_bin_dir()
    required = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
    missing = [name for name in required if not os.access(directory / name, os.X_OK)]
    if missing:
        raise BinariesMissingError(
            f"control-plane binaries missing from {directory}: {', '.join(missing)}; "
            "run `make controlplane` to build them (first build takes 20-40 minutes)"
        )
    helm = directory / "helm"
    return Binaries(
        bin_dir=directory,
        etcd=directory / "etcd",
        kube_apiserver=directory / "kube-apiserver",
        kube_controller_manager=directory / "kube-controller-manager",
        kubectl=directory / "kubectl",
        helm=helm if os.access(helm, os.X_OK) else None,
    )


# --------------------------------------------------------------------------------------------------
# Ports


def pick_free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free on `host` right now.

    All sockets are held open together so the ports differ; another process may still take one before the
    component binds it, which `ControlPlane.start` detects and answers by picking again.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


PortPicker = Callable[[int], list[int]]


def port_in_use(log_text: str) -> bool:
    """True if a component's output says it could not bind a port because something else holds it."""
    return bool(_PORT_IN_USE.search(log_text))


# --------------------------------------------------------------------------------------------------
# PKI: one throwaway CA and what the components need from it.


class _Pki:
    """Where the files of the run's throwaway PKI live."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca_cert, self.ca_key = directory / "ca.crt", directory / "ca.key"
        self.apiserver_cert, self.apiserver_key = directory / "apiserver.crt", directory / "apiserver.key"
        self.admin_cert, self.admin_key = directory / "admin.crt", directory / "admin.key"
        self.kcm_client_cert = directory / "controller-manager-client.crt"
        self.kcm_client_key = directory / "controller-manager-client.key"
        self.kcm_serving_cert = directory / "controller-manager.crt"
        self.kcm_serving_key = directory / "controller-manager.key"
        self.sa_key, self.sa_pub = directory / "sa.key", directory / "sa.pub"


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.write_bytes(data)
    path.chmod(mode)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _issue(
    *,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    now: datetime.datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _make_pki(directory: Path, now: datetime.datetime) -> _Pki:
    """A fresh CA, the serving and client certificates of the components, and the service-account keys."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = _Pki(directory)
    ca_key = _new_key()
    ca_name = _name("mtls-operator test control plane CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(pki.ca_key, _key_pem(ca_key))
    _write(pki.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)

    service_ip = str(next(ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE).hosts()))
    issued = {
        (pki.apiserver_cert, pki.apiserver_key): _issue(
            ca_key=ca_key,
            ca_cert=ca_cert,
            subject=_name("kube-apiserver"),
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            dns=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", "::1", service_ip),
            now=now,
        ),
        (pki.admin_cert, pki.admin_key): _issue(
            ca_key=ca_key,
            ca_cert=ca_cert,
            subject=_name(ADMIN_USER, "system:masters"),
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            now=now,
        ),
        # The controller manager runs every controller with its own credential
        # (--use-service-account-credentials=false), so it needs the superuser group too.
        (pki.kcm_client_cert, pki.kcm_client_key): _issue(
            ca_key=ca_key,
            ca_cert=ca_cert,
            subject=_name("system:kube-controller-manager", "system:masters"),
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            now=now,
        ),
        (pki.kcm_serving_cert, pki.kcm_serving_key): _issue(
            ca_key=ca_key,
            ca_cert=ca_cert,
            subject=_name("kube-controller-manager"),
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            dns=("localhost",),
            ips=("127.0.0.1",),
            now=now,
        ),
    }
    for (cert_path, key_path), (key, cert) in issued.items():
        _write(key_path, _key_pem(key))
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)

    sa_key = _new_key()
    _write(pki.sa_key, _key_pem(sa_key))
    _write(
        pki.sa_pub,
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        0o644,
    )
    return pki


def render_kubeconfig(
    *, server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str, cluster: str = "mtls-test"
) -> str:
    """A kubeconfig (YAML) for one client-certificate user, with the certificates embedded."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)},
            }
        ],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
        "preferences": {},
    }
    return yaml.safe_dump(document, sort_keys=False)


def audit_policy() -> dict[str, Any]:
    """The API server's audit policy for test runs: every request of an audited client or a service
    account, and the writes of the others, except the control plane's own components and the nodes.

    Metadata level (no bodies, so no key material), except Event creations, recorded with their request
    body: an Event's name is generated by the server, and its involvedObject is what says which object
    it is about. Stages RequestReceived and ResponseStarted are left out: one event per request, when it
    completed (a denied request completes at once, so a 403 on a watch is recorded too).
    """
    events = [{"group": "", "resources": ["events"]}, {"group": "events.k8s.io", "resources": ["events"]}]
    return {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived", "ResponseStarted"],
        "rules": [
            {"level": "None", "users": list(_UNAUDITED_USERS)},
            {"level": "None", "userGroups": ["system:nodes"]},
            {"level": "Request", "verbs": ["create"], "resources": events},
            {"level": "Metadata", "userGroups": [AUDITED_GROUP, "system:serviceaccounts"]},
            {"level": "Metadata", "verbs": list(WRITE_VERBS)},
            {"level": "None"},
        ],
    }


def _audit_args(run: Path) -> list[str]:
    """kube-apiserver flags that write the audit log to ``logs/audit.log``, one JSON event per line, in
    blocking mode (an event is on disk before its request's response ends), never rotated (readers keep
    byte offsets into it)."""
    policy = run / "config" / "audit-policy.yaml"
    policy.write_text(yaml.safe_dump(audit_policy(), sort_keys=False))
    return [
        f"--audit-policy-file={policy}",
        f"--audit-log-path={run / 'logs' / AUDIT_LOG}",
        "--audit-log-format=json",
        "--audit-log-mode=blocking",
        "--audit-log-maxsize=0",
        "--audit-log-maxbackup=0",
    ]


# --------------------------------------------------------------------------------------------------
# Processes and the state file


@dataclass(frozen=True)
class ComponentState:
    name: str
    pid: int
    exe: str
    log: str
    health: str


@dataclass(frozen=True)
class RunState:
    """What `state.json` records about a run, so another process can find and stop it."""

    run_dir: str
    server: str
    kubeconfig: str
    components: tuple[ComponentState, ...] = ()
    # False until every component is healthy: a state that stays unready belongs to an interrupted start.
    ready: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "run_dir": self.run_dir,
                "server": self.server,
                "kubeconfig": self.kubeconfig,
                "components": [vars(c) for c in self.components],
                "ready": self.ready,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> RunState:
        raw = json.loads(text)
        return cls(
            run_dir=str(raw["run_dir"]),
            server=str(raw["server"]),
            kubeconfig=str(raw["kubeconfig"]),
            components=tuple(
                ComponentState(
                    name=str(c["name"]),
                    pid=int(c["pid"]),
                    exe=str(c["exe"]),
                    log=str(c["log"]),
                    health=str(c["health"]),
                )
                for c in raw["components"]
            ),
            ready=bool(raw.get("ready", False)),
        )


def read_run_state(run_dir: Path) -> RunState | None:
    """The recorded state of a run, or None if there is none (or it is unreadable, which is treated alike)."""
    path = run_dir / STATE_FILE
    try:
        return RunState.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None


def _write_state(run_dir: Path, state: RunState) -> None:
    tmp = run_dir / (STATE_FILE + ".tmp")
    tmp.write_text(state.to_json())
    tmp.replace(run_dir / STATE_FILE)


def process_alive(pid: int, exe: str | None = None) -> bool:
    """True if `pid` is a live (not zombie) process, and, when `exe` is given, runs that executable.

    The executable check guards against a recycled pid after a reboot or a long-dead run.
    """
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        state = stat.rsplit(")", 1)[-1].split()[0]
        if state in ("Z", "X"):
            return False
        return exe is None or (bool(cmdline) and cmdline[0].decode(errors="replace") == exe)
    if Path("/proc/self").is_dir():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def classify_run(state: RunState | None, alive: Callable[[ComponentState], bool]) -> str:
    """`"stopped"` (no state), `"running"` (started completely, every component alive) or `"stale"`.

    Stale means some component died, or the start that wrote the state never finished (it was killed).
    """
    if state is None:
        return "stopped"
    if state.ready and state.components and all(alive(c) for c in state.components):
        return "running"
    return "stale"


def _component_alive(component: ComponentState) -> bool:
    return process_alive(component.pid, component.exe)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # Each component leads its own session (start_new_session=True), so its pid is its process group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _terminate(components: Sequence[ComponentState], timeout: float) -> list[str]:
    """Stop components, last started first: SIGTERM to each group, then SIGKILL after `timeout`.

    Returns the names of components that would not die (should not happen: SIGKILL cannot be ignored).
    """
    for component in reversed(components):
        if not _component_alive(component):
            continue
        _signal_group(component.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _component_alive(component) and time.monotonic() < deadline:
            _reap(component.pid)
            time.sleep(0.05)
        if _component_alive(component):
            _signal_group(component.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    left = [c for c in components if _component_alive(c)]
    while left and time.monotonic() < deadline:
        for component in left:
            _reap(component.pid)
        time.sleep(0.05)
        left = [c for c in left if _component_alive(c)]
    return [c.name for c in left]


def _reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie (no-op for other processes)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * lines))
            data = f.read()
    except FileNotFoundError:
        return "(no log)"
    text = data.decode(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def log_tails(run_dir: Path, lines: int = 40) -> dict[str, str]:
    """The last `lines` lines of each component's log in a run directory, by component name."""
    logs = run_dir / "logs"
    return {
        name: _tail(logs / f"{name}.log", lines) for name in COMPONENTS if (logs / f"{name}.log").exists()
    }


def format_log_tails(tails: Mapping[str, str]) -> str:
    return "\n".join(f"----- {name} (last lines) -----\n{text}" for name, text in tails.items())


@contextlib.contextmanager
def _locked(run_dir: Path, timeout: float = 30.0) -> Iterator[None]:
    """An exclusive lock on the run directory, so two `up`/`down` never interleave; never waits forever."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / ".lock").open("w") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ControlPlaneError(
                        f"{run_dir} is locked by another up/down for more than {timeout:.0f}s"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_busy(run_dir: Path) -> bool:
    """True while an `up` or `down` holds the run directory's lock."""
    try:
        with (run_dir / ".lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask Linux to SIGKILL this child when the process that started it dies (a killed pytest)."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


# --------------------------------------------------------------------------------------------------
# Probes


def _https_get(
    url_host: str, port: int, path: str, context: ssl.SSLContext, timeout: float = _PROBE_TIMEOUT
) -> tuple[int, str]:
    conn = http.client.HTTPSConnection(url_host, port, context=context, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def _http_get(host: str, port: int, path: str, timeout: float = _PROBE_TIMEOUT) -> tuple[int, str]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def _client_context(pki: _Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    return context


# --------------------------------------------------------------------------------------------------
# The control plane


@dataclass
class _Launch:
    name: str
    exe: Path
    args: list[str]
    health: str
    probe: Callable[[], tuple[int, str]]


@dataclass
class ControlPlane:
    """A running control plane. Make one with `ControlPlane.start` (or find one with `attach`)."""

    run_dir: Path
    server: str
    kubeconfig: Path
    binaries: Binaries | None
    components: list[ComponentState] = field(default_factory=list)
    started_in: float = 0.0
    _popens: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    # ---- construction

    @classmethod
    def start(
        cls,
        run_dir: Path | str,
        *,
        bin_dir: Path | None = None,
        timeout: float = 120.0,
        die_with_parent: bool = False,
        port_picker: PortPicker = pick_free_ports,
        apiserver_args: Sequence[str] = (),
        audit: bool = False,
    ) -> ControlPlane:
        """Start etcd, kube-apiserver and kube-controller-manager in `run_dir` and wait until all are healthy.

        `timeout` bounds the whole start. `die_with_parent` makes the components die with this process
        (for test sessions); `make cluster-up` leaves it off so the cluster outlives the command.
        `apiserver_args` are added to kube-apiserver's command line (a test that needs, say, a short etcd
        compaction interval). `audit` writes the API server's audit log (`audit_policy`) to
        `audit_log`. Raises `BinariesMissingError`, or `ControlPlaneError` with the log tail of the
        failing component; on failure nothing is left running.
        """
        began = time.monotonic()
        deadline = began + timeout
        binaries = find_binaries(bin_dir)
        run = Path(run_dir).absolute()
        run.mkdir(parents=True, exist_ok=True)
        if read_run_state(run) is not None:
            raise ControlPlaneError(f"{run} already holds a control plane; stop it first")
        for sub in ("pki", "etcd", "logs", "config"):
            shutil.rmtree(run / sub, ignore_errors=True)
        (run / "logs").mkdir()
        (run / "config").mkdir()
        pki = _make_pki(run / "pki", datetime.datetime.now(datetime.UTC))
        if audit:
            apiserver_args = [*_audit_args(run), *apiserver_args]
        plane = cls(run_dir=run, server="", kubeconfig=run / "kubeconfig", binaries=binaries, components=[])
        try:
            plane._start_all(binaries, pki, deadline, die_with_parent, port_picker, tuple(apiserver_args))
        except BaseException:
            plane._stop_processes(timeout=5.0)
            _forget_run(run)
            raise
        plane.started_in = time.monotonic() - began
        return plane

    @classmethod
    def attach(cls, run_dir: Path | str) -> ControlPlane | None:
        """The control plane recorded in `run_dir` (maybe started by another process), or None."""
        run = Path(run_dir).absolute()
        state = read_run_state(run)
        if state is None:
            return None
        return cls(
            run_dir=run,
            server=state.server,
            kubeconfig=Path(state.kubeconfig),
            binaries=None,
            components=list(state.components),
        )

    # ---- the public surface

    @property
    def ca_file(self) -> Path:
        return self.run_dir / "pki" / "ca.crt"

    @property
    def audit_log(self) -> Path:
        """The API server's audit log (JSON lines), written when the plane was started with ``audit=True``."""
        return self.run_dir / "logs" / AUDIT_LOG

    def status(self) -> str:
        """`"running"`, `"stale"` (some component died) or `"stopped"`."""
        return classify_run(read_run_state(self.run_dir), _component_alive)

    def version(self) -> str:
        """The kube-apiserver's gitVersion, e.g. ``v1.36.3``."""
        status, body = self._get("/version")
        if status != 200:
            raise ControlPlaneError(f"GET /version answered {status}: {body[:200]}")
        return str(json.loads(body)["gitVersion"])

    def readyz(self) -> tuple[int, str]:
        return self._get("/readyz")

    def log_tails(self, lines: int = 40) -> dict[str, str]:
        """The last `lines` lines of each component's log, by component name."""
        return log_tails(self.run_dir, lines)

    def format_log_tails(self, lines: int = 40) -> str:
        return format_log_tails(self.log_tails(lines))

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every component (process group) and wait for them; keep only the logs of the run."""
        stubborn = self._stop_processes(timeout)
        if stubborn:
            raise ControlPlaneError(f"could not stop {', '.join(stubborn)} in {self.run_dir}")
        _forget_run(self.run_dir)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- internals

    def _get(self, path: str) -> tuple[int, str]:
        host, _, port = self.server.removeprefix("https://").rpartition(":")
        return _https_get(host, int(port), path, _client_context(_Pki(self.run_dir / "pki")))

    def _stop_processes(self, timeout: float) -> list[str]:
        stubborn = _terminate(self.components, timeout)
        for popen in self._popens.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=1.0)
        self._popens.clear()
        return stubborn

    def _record(self, *, ready: bool = False) -> None:
        _write_state(
            self.run_dir,
            RunState(
                run_dir=str(self.run_dir),
                server=self.server,
                kubeconfig=str(self.kubeconfig),
                components=tuple(self.components),
                ready=ready,
            ),
        )

    def _start_all(
        self,
        binaries: Binaries,
        pki: _Pki,
        deadline: float,
        die_with_parent: bool,
        port_picker: PortPicker,
        apiserver_args: tuple[str, ...] = (),
    ) -> None:
        run = self.run_dir
        context = _client_context(pki)

        def etcd(ports: list[int]) -> _Launch:
            client, peer = ports
            data = run / "etcd"
            shutil.rmtree(data, ignore_errors=True)
            return _Launch(
                name="etcd",
                exe=binaries.etcd,
                args=[
                    "--name=mtls-test",
                    f"--data-dir={data}",
                    f"--listen-client-urls=http://127.0.0.1:{client}",
                    f"--advertise-client-urls=http://127.0.0.1:{client}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-cluster=mtls-test=http://127.0.0.1:{peer}",
                    "--initial-cluster-state=new",
                    "--unsafe-no-fsync",
                    "--quota-backend-bytes=2147483648",
                    "--log-level=warn",
                ],
                health=f"http://127.0.0.1:{client}/health",
                probe=lambda: _http_get("127.0.0.1", client, "/health"),
            )

        etcd_launch = self._launch_with_retries(etcd, 2, deadline, die_with_parent, port_picker)
        etcd_url = etcd_launch.health.removesuffix("/health")

        def apiserver(ports: list[int]) -> _Launch:
            (port,) = ports
            return _Launch(
                name="kube-apiserver",
                exe=binaries.kube_apiserver,
                args=[
                    f"--etcd-servers={etcd_url}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    f"--secure-port={port}",
                    f"--tls-cert-file={pki.apiserver_cert}",
                    f"--tls-private-key-file={pki.apiserver_key}",
                    f"--client-ca-file={pki.ca_cert}",
                    f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                    f"--service-account-key-file={pki.sa_pub}",
                    f"--service-account-signing-key-file={pki.sa_key}",
                    # Node: the kubelet of the test node (mtls_operator.testing.node) is authorized as
                    # a node, and NodeRestriction limits it to its own Node and Pods, as in production.
                    "--authorization-mode=Node,RBAC",
                    "--enable-admission-plugins=NodeRestriction",
                    f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                    # The kubelet's addresses: InternalIP is the pod gateway inside the node's sealed
                    # network namespace, never reachable from here; Hostname is `localhost`, where a
                    # forwarder leads to the kubelet (logs, exec). Never try the InternalIP.
                    "--kubelet-preferred-address-types=Hostname",
                    f"--kubelet-client-certificate={pki.admin_cert}",
                    f"--kubelet-client-key={pki.admin_key}",
                    # Kubernetes-native identity: PodCertificateRequest and ClusterTrustBundle (beta,
                    # off by default in 1.36) are served, for the podCertificate projected volume.
                    f"--runtime-config={RUNTIME_CONFIG}",
                    f"--feature-gates={FEATURE_GATES}",
                    "--enable-priority-and-fairness=false",
                    # The only address is loopback, which an Endpoints object may not hold: without this the
                    # apiserver logs a failed sync of the `kubernetes` Service every ten seconds.
                    "--endpoint-reconciler-type=none",
                    "--allow-privileged=true",
                    "--profiling=false",
                    "--v=1",
                    *apiserver_args,
                ],
                health=f"https://127.0.0.1:{port}/readyz",
                probe=lambda: _https_get("127.0.0.1", port, "/readyz", context),
            )

        api_launch = self._launch_with_retries(apiserver, 1, deadline, die_with_parent, port_picker)
        self.server = api_launch.health.removesuffix("/readyz")
        self._write_kubeconfigs(pki)
        self._record()

        kcm_kubeconfig = run / "config" / "kube-controller-manager.kubeconfig"

        def controller_manager(ports: list[int]) -> _Launch:
            (port,) = ports
            return _Launch(
                name="kube-controller-manager",
                exe=binaries.kube_controller_manager,
                args=[
                    f"--kubeconfig={kcm_kubeconfig}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={port}",
                    f"--tls-cert-file={pki.kcm_serving_cert}",
                    f"--tls-private-key-file={pki.kcm_serving_key}",
                    "--controllers=*",
                    f"--service-account-private-key-file={pki.sa_key}",
                    f"--root-ca-file={pki.ca_cert}",
                    f"--cluster-signing-cert-file={pki.ca_cert}",
                    f"--cluster-signing-key-file={pki.ca_key}",
                    "--use-service-account-credentials=false",
                    f"--feature-gates={FEATURE_GATES}",
                    "--leader-elect=false",
                    f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                    "--profiling=false",
                    "--v=1",
                ],
                health=f"https://127.0.0.1:{port}/healthz",
                probe=lambda: _https_get("127.0.0.1", port, "/healthz", context),
            )

        self._launch_with_retries(controller_manager, 1, deadline, die_with_parent, port_picker)
        self._record(ready=True)

    def _write_kubeconfigs(self, pki: _Pki) -> None:
        ca = pki.ca_cert.read_bytes()
        _write(
            self.kubeconfig,
            render_kubeconfig(
                server=self.server,
                ca_pem=ca,
                cert_pem=pki.admin_cert.read_bytes(),
                key_pem=pki.admin_key.read_bytes(),
                user=ADMIN_USER,
            ).encode(),
        )
        _write(
            self.run_dir / "config" / "kube-controller-manager.kubeconfig",
            render_kubeconfig(
                server=self.server,
                ca_pem=ca,
                cert_pem=pki.kcm_client_cert.read_bytes(),
                key_pem=pki.kcm_client_key.read_bytes(),
                user="system:kube-controller-manager",
            ).encode(),
        )

    def _launch_with_retries(
        self,
        make: Callable[[list[int]], _Launch],
        port_count: int,
        deadline: float,
        die_with_parent: bool,
        port_picker: PortPicker,
    ) -> _Launch:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            launch = make(port_picker(port_count))
            try:
                self._launch(launch, attempt, deadline, die_with_parent)
            except _PortInUseError:
                if attempt == PORT_ATTEMPTS:
                    raise
                continue
            return launch
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self, launch: _Launch, attempt: int, deadline: float, die_with_parent: bool) -> None:
        log_path = self.run_dir / "logs" / f"{launch.name}.log"
        with log_path.open("ab") as log:
            log.write(
                f"===== {datetime.datetime.now(datetime.UTC):%H:%M:%S} starting {launch.name} "
                f"(attempt {attempt}): {launch.exe} {' '.join(launch.args)}\n".encode()
            )
            log.flush()
            offset = log.tell()
            popen = subprocess.Popen(
                [str(launch.exe), *launch.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.run_dir,
                start_new_session=True,
                preexec_fn=_die_with_parent if die_with_parent else None,
            )
        component = ComponentState(
            name=launch.name, pid=popen.pid, exe=str(launch.exe), log=str(log_path), health=launch.health
        )
        self._popens[launch.name] = popen
        self.components.append(component)
        self._record()
        try:
            self._wait_healthy(launch, popen, log_path, offset, deadline)
        except BaseException:
            _terminate([component], 5.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=1.0)
            self.components.remove(component)
            self._popens.pop(launch.name, None)
            raise

    def _wait_healthy(
        self,
        launch: _Launch,
        popen: subprocess.Popen[bytes],
        log_path: Path,
        offset: int,
        deadline: float,
    ) -> None:
        last = "no answer yet"
        while True:
            code = popen.poll()
            if code is not None:
                new_output = _read_from(log_path, offset)
                if port_in_use(new_output):
                    raise _PortInUseError(f"{launch.name}: a port was taken before it could bind it")
                raise ControlPlaneError(
                    f"{launch.name} exited with code {code} before it became healthy "
                    f"({launch.health}); log {log_path}:\n{_tail(log_path, 40)}"
                )
            try:
                status, body = launch.probe()
            except (OSError, http.client.HTTPException) as error:
                last = f"{type(error).__name__}: {error}"
            else:
                if status == 200:
                    return
                last = f"HTTP {status}: {_failed_checks(body)}"
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{launch.name} did not become healthy at {launch.health} before the deadline; "
                    f"last answer: {last}\nlog {log_path}:\n{_tail(log_path, 40)}"
                )
            time.sleep(_POLL_INTERVAL)


def _failed_checks(body: str) -> str:
    """The failing checks of a verbose /readyz or /healthz answer, or its end when it lists none."""
    failed = [line for line in body.splitlines() if line.startswith("[-]")]
    return "; ".join(failed) if failed else body.strip()[-1000:]


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


# --------------------------------------------------------------------------------------------------
# Command line: up | down | status


def _say(message: str, stream: IO[str] | None = None) -> None:
    print(f"controlplane: {message}", file=stream or sys.stdout, flush=True)


def _forget_run(run: Path) -> None:
    """Remove what a stopped run leaves behind except its logs: state, etcd data, credentials."""
    (run / STATE_FILE).unlink(missing_ok=True)
    (run / "kubeconfig").unlink(missing_ok=True)
    for sub in ("etcd", "config", "pki"):
        shutil.rmtree(run / sub, ignore_errors=True)


def _stop_recorded(run: Path, state: RunState) -> list[str]:
    from mtls_operator.testing.node import stop_recorded_node

    stubborn = stop_recorded_node(run)
    stubborn += _terminate(state.components, 15.0)
    if not stubborn:
        _forget_run(run)
    return stubborn


def cmd_up(run: Path, timeout: float, node: bool = False) -> int:
    with _locked(run):
        state = read_run_state(run)
        if state is None and (run / STATE_FILE).exists():
            _say(f"{run / STATE_FILE} is unreadable; removing it")
            (run / STATE_FILE).unlink()
        status = classify_run(state, _component_alive)
        if status == "running" and state is not None:
            _say(f"already running at {state.server}; kubeconfig {state.kubeconfig}")
            return 0
        if status == "stale" and state is not None:
            dead = [c.name for c in state.components if not _component_alive(c)]
            why = f"{', '.join(dead)} not running" if dead else "its start never finished"
            _say(f"found a stale control plane in {run} ({why}, probably from a killed run); cleaning it up")
            stubborn = _stop_recorded(run, state)
            if stubborn:
                _say(f"could not stop {', '.join(stubborn)}", sys.stderr)
                return 1
        try:
            plane = ControlPlane.start(run, timeout=timeout)
        except ControlPlaneError as error:
            _say(str(error), sys.stderr)
            return 1
        _say(f"kube-apiserver {plane.version()} ready at {plane.server} in {plane.started_in:.1f}s")
        if node:
            from mtls_operator.testing.node import Node

            try:
                started = Node.start(plane)
            except ControlPlaneError as error:
                _say(f"the node did not start, stopping the control plane: {error}", sys.stderr)
                plane.stop()
                return 1
            _say(
                f"node {started.name} Ready in {started.started_in:.1f}s (network namespace {started.netns}, "
                f"operator image {started.operator_image}); logs in {started.log_dir()}"
            )
        _say(f"export KUBECONFIG={plane.kubeconfig}")
        _say(f"logs in {run / 'logs'}; stop with `make cluster-down`")
        return 0


def cmd_down(run: Path) -> int:
    with _locked(run):
        state = read_run_state(run)
        if state is None:
            (run / STATE_FILE).unlink(missing_ok=True)
            _say(f"nothing running in {run}")
            return 0
        from mtls_operator.testing.node import read_node_state

        node = read_node_state(run)
        stubborn = _stop_recorded(run, state)
        if stubborn:
            _say(f"could not stop {', '.join(stubborn)}", sys.stderr)
            return 1
        components = [*(node.components if node else ()), *state.components]
        stopped = ", ".join(f"{c.name} (pid {c.pid})" for c in components)
        _say(f"stopped {stopped or 'nothing'} in {run}")
        return 0


def cmd_status(run: Path) -> int:
    state = read_run_state(run)
    status = classify_run(state, _component_alive)
    if state is None:
        _say(f"stopped (nothing recorded in {run})")
        return 1
    if status == "stale" and not state.ready and _lock_busy(run):
        status = "starting (another `up` holds the run directory)"
    _say(f"{status}: server {state.server or '(not yet)'}, kubeconfig {state.kubeconfig}")
    from mtls_operator.testing.node import read_node_state

    node = read_node_state(run)
    for component in [*state.components, *(node.components if node else ())]:
        alive = "alive" if _component_alive(component) else "DEAD"
        _say(f"  {component.name:<24} pid {component.pid:<8} {alive}  log {component.log}")
    return 0 if status == "running" else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mtls_operator.testing.controlplane",
        description="Start, stop or inspect a local Kubernetes control plane (etcd, kube-apiserver, "
        "kube-controller-manager) for development and tests.",
    )
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--dir", type=Path, default=Path(".local"), help="run directory (default .local)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds allowed for `up` (default 120)")
    parser.add_argument(
        "--node", action="store_true", help="`up` also starts a node: kube-scheduler, containerd, a kubelet"
    )
    args = parser.parse_args(argv)
    run: Path = args.dir.absolute()
    try:
        if args.command == "up":
            return cmd_up(run, args.timeout, node=args.node)
        if args.command == "down":
            return cmd_down(run)
        return cmd_status(run)
    except ControlPlaneError as error:
        _say(str(error), sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
