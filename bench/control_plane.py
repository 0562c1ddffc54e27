"""A throwaway control plane per scenario (`cluster()`): etcd, kube-apiserver with an audit log of
writes and lists, kube-controller-manager, the CRDs of the tree measured, admin clients; and what the API
server did over a window (`ApiServerWindow`: request and response-size deltas, CPU of its components).

The `kubernetes` client is imported lazily, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness import AuditRecord, delta, parse_audit_line, request_counts, response_bytes, writes_by_resource
from procfs import cpu_seconds, current_rss
from reporting import REPO, say

CRD_DIR = REPO / "crds"
GROUP, VERSION = "mtls.dev", "v1alpha1"
CERTS, ISSUERS = "mtlscertificates", "mtlsissuers"
STAMP_ANNOTATION = "mtls.dev/tls-stamp"


# Writes and lists are audited (who made them: the user agent), nothing else; `quiet` namespaces are not
# audited at all (the noise scenario's 25k objects would otherwise cost the API server the audit lines).
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
{quiet}- level: Metadata
  verbs: ["create", "update", "patch", "delete", "deletecollection", "list"]
- level: None
"""


class Cluster:
    """A throwaway control plane with the CRDs applied, admin clients for it, its /metrics and its audit
    log (writes and lists, with the user agent that made them)."""

    def __init__(self, run_dir: Path, quiet_namespaces: Sequence[str] = ()) -> None:
        from kubernetes import client, config

        from mtls_operator.testing.controlplane import ControlPlane

        quiet = (
            f"- level: None\n  namespaces: [{', '.join(json.dumps(n) for n in quiet_namespaces)}]\n"
            if quiet_namespaces
            else ""
        )
        policy = run_dir / "audit-policy.yaml"
        run_dir.mkdir(parents=True, exist_ok=True)
        policy.write_text(AUDIT_POLICY.format(quiet=quiet))
        self.audit_log = run_dir / "audit.log"
        self.plane = ControlPlane.start(
            run_dir,
            die_with_parent=True,
            apiserver_args=[
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxbackup=0",
                "--audit-log-maxsize=0",
                # BENCH_APISERVER_PROFILE=<seconds>: a CPU profile of kube-apiserver (see profile_apiserver).
                *(["--profiling=true"] if os.environ.get("BENCH_APISERVER_PROFILE") else []),
            ],
        )
        self.kubeconfig = self.plane.kubeconfig
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = 32
        self.api_client = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.apiext = client.ApiextensionsV1Api(self.api_client)
        self._audit_offset = 0
        self._audit_partial = b""
        self.audit: list[AuditRecord] = []

    def pid(self, component: str) -> int:
        """The pid of "etcd", "kube-apiserver" or "kube-controller-manager"."""
        for c in self.plane.components:
            if c.name == component:
                return c.pid
        raise KeyError(component)

    def profile_apiserver(self, into: Path) -> threading.Thread | None:
        """With BENCH_APISERVER_PROFILE=<seconds>: a Go CPU profile of kube-apiserver over the next that many
        seconds, written to ``into`` (read it with `go tool pprof -top <kube-apiserver binary> <into>`)."""
        seconds = int(os.environ.get("BENCH_APISERVER_PROFILE") or 0)
        if not seconds:
            return None

        def fetch() -> None:
            request = self.api_client.param_serialize(
                "GET", f"/debug/pprof/profile?seconds={seconds}", auth_settings=["BearerToken"]
            )
            resp = self.api_client.call_api(*request, _request_timeout=seconds + 60)
            resp.read()
            into.write_bytes(bytes(resp.data))

        thread = threading.Thread(target=fetch, daemon=True)
        thread.start()
        return thread

    def metrics_text(self) -> str:
        """The API server's /metrics."""
        request = self.api_client.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
        resp = self.api_client.call_api(*request)
        resp.read()
        return bytes(resp.data).decode()

    def read_audit(self) -> list[AuditRecord]:
        """Every audit record so far (read incrementally)."""
        with contextlib.suppress(FileNotFoundError), self.audit_log.open("rb") as f:
            f.seek(self._audit_offset)
            data = f.read()
            self._audit_offset += len(data)
            data = self._audit_partial + data
            *complete, self._audit_partial = data.split(b"\n")
            for raw in complete:
                record = parse_audit_line(raw.decode(errors="replace"))
                if record is not None:
                    self.audit.append(record)
        return self.audit

    def apply_crds(self, crd_dir: Path = CRD_DIR) -> None:
        import yaml

        names = []
        for path in sorted(crd_dir.glob("*.yaml")):
            body = yaml.safe_load(path.read_text())
            names.append(body["metadata"]["name"])
            self.apiext.create_custom_resource_definition(body)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            established = 0
            for name in names:
                crd = self.apiext.read_custom_resource_definition(name)
                conds = {c.type: c.status for c in (crd.status.conditions or [])}
                established += conds.get("Established") == "True"
            if established == len(names):
                # Established can run a moment ahead of the resource being served: list once to be sure.
                with contextlib.suppress(Exception):
                    self.custom.list_namespaced_custom_object(GROUP, VERSION, "default", CERTS, limit=1)
                    return
            time.sleep(0.2)
        raise RuntimeError("the CRDs were not established within 60s")

    def namespace(self, name: str) -> str:
        from kubernetes import client

        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        return name

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.api_client.close()
        self.plane.stop()


class ApiServerWindow:
    """What the API server did between `start()` and `stop()`: request and response-size deltas from its
    /metrics, and the CPU seconds of kube-apiserver, etcd and kube-controller-manager."""

    def __init__(self, c: Cluster) -> None:
        self.c = c
        self.pids = {name: c.pid(name) for name in ("kube-apiserver", "etcd", "kube-controller-manager")}

    def start(self) -> ApiServerWindow:
        text = self.c.metrics_text()
        self._requests, self._bytes = request_counts(text), response_bytes(text)
        self._cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.started = time.time()
        return self

    def stop(self) -> dict[str, Any]:
        cpu = {name: cpu_seconds(pid) - self._cpu[name] for name, pid in self.pids.items()}
        text = self.c.metrics_text()
        requests = delta(request_counts(text), self._requests)
        sizes = delta(response_bytes(text), self._bytes)
        return {
            "seconds": time.time() - self.started,
            "apiserver_cpu_seconds": cpu["kube-apiserver"],
            "etcd_cpu_seconds": cpu["etcd"],
            "controller_manager_cpu_seconds": cpu["kube-controller-manager"],
            "apiserver_rss_bytes": current_rss(self.pids["kube-apiserver"]),
            "writes_by_resource": writes_by_resource(requests),
            "requests": {" ".join(k for k in key if k): v for key, v in sorted(requests.items())},
            "response_bytes": {" ".join(k for k in key if k): v for key, v in sorted(sizes.items())},
        }


@contextlib.contextmanager
def cluster(crd_dir: Path = CRD_DIR, quiet_namespaces: Sequence[str] = ()) -> Iterator[Cluster]:
    run_dir = Path(tempfile.mkdtemp(prefix="mtls-bench-"))
    say(f"starting a control plane in {run_dir}")
    c = Cluster(run_dir, quiet_namespaces)
    try:
        c.apply_crds(crd_dir)
        yield c
    finally:
        c.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
