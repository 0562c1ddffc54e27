"""The parts of the control-plane launcher that need no binaries: ports, go.mod, state, kubeconfig, CLI."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.helpers import wait_for

from mtls_operator.testing import controlplane as cp


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def state_with(tmp_path: Path, *components: cp.ComponentState, ready: bool = True) -> cp.RunState:
    return cp.RunState(
        run_dir=str(tmp_path),
        server="https://127.0.0.1:6443",
        kubeconfig=str(tmp_path / "kubeconfig"),
        components=components,
        ready=ready,
    )


def component(name: str, pid: int, exe: str = "/bin/x") -> cp.ComponentState:
    return cp.ComponentState(name=name, pid=pid, exe=exe, log=f"/logs/{name}.log", health="http://x/health")


# ---- ports


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = cp.pick_free_ports(4)
    assert len(set(ports)) == 4
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


@pytest.mark.parametrize(
    ("log", "in_use"),
    [
        pytest.param(
            'err="failed to listen on 127.0.0.1:6443: listen tcp 127.0.0.1:6443: bind: address already in '
            'use"',
            True,
            id="recognises the kube-apiserver bind failure",
        ),
        pytest.param(
            '{"level":"fatal","msg":"discovery failed","error":"listen tcp 127.0.0.1:2380: bind: address '
            'already in use"}',
            True,
            id="recognises the etcd bind failure",
        ),
        pytest.param(
            "error: unable to load client CA file: no such file", False, id="does not mistake other failures"
        ),
    ],
)
def test_port_in_use_detection(log: str, in_use: bool) -> None:
    assert cp.port_in_use(log) is in_use


# ---- which binaries


@pytest.mark.parametrize(
    "go_mod",
    [
        pytest.param(
            "module x\n\nrequire (\n\tgo.etcd.io/etcd/server/v3 v3.6.8\n\tk8s.io/kubernetes v1.36.3\n)\n",
            id="reads the version from a require block",
        ),
        pytest.param(
            "module x\nrequire k8s.io/kubernetes v1.36.3 // pinned\n", id="reads a one-line require"
        ),
        pytest.param(
            "module x\nrequire (\n\tk8s.io/kubernetes v1.36.3\n)\nreplace k8s.io/kubernetes => ./k8s\n",
            id="ignores replace directives",
        ),
    ],
)
def test_kubernetes_version_comes_from_go_mod(go_mod: str) -> None:
    assert cp.k8s_version_from_go_mod(go_mod) == "v1.36.3"


def test_go_mod_without_kubernetes_is_an_error() -> None:
    with pytest.raises(cp.ControlPlaneError, match=r"k8s\.io/kubernetes"):
        cp.k8s_version_from_go_mod("module x\nrequire k8s.io/api v0.36.3\n")


def test_repository_go_mod_names_a_version() -> None:
    go_mod = Path(__file__).resolve().parents[2] / "e2e" / "controlplane" / "go.mod"
    assert cp.k8s_version_from_go_mod(go_mod.read_text()).startswith("v1.")


def test_bin_dir_follows_mtls_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MTLS_CONTROLPLANE_BIN", raising=False)
    monkeypatch.setenv("MTLS_CACHE", str(tmp_path))
    assert cp.default_bin_dir().parent.parent == tmp_path / "controlplane"


def test_missing_binaries_name_the_make_target(tmp_path: Path) -> None:
    (tmp_path / "etcd").write_text("")
    with pytest.raises(cp.BinariesMissingError) as missing:
        cp.find_binaries(tmp_path)
    assert "make controlplane" in str(missing.value)
    assert "kube-apiserver" in str(missing.value)


# ---- state


def test_run_state_round_trips_through_json(tmp_path: Path) -> None:
    state = state_with(tmp_path, component("etcd", 10), component("kube-apiserver", 11))
    assert cp.RunState.from_json(state.to_json()) == state


def test_unreadable_state_reads_as_none(tmp_path: Path) -> None:
    (tmp_path / cp.STATE_FILE).write_text("{not json")
    assert cp.read_run_state(tmp_path) is None


@pytest.mark.parametrize(
    ("alive", "ready", "expected"),
    [
        pytest.param(
            {"etcd": True, "kube-apiserver": True}, True, "running", id="running when every pid lives"
        ),
        pytest.param({"etcd": True, "kube-apiserver": False}, True, "stale", id="stale when one pid died"),
        pytest.param({"etcd": False, "kube-apiserver": False}, True, "stale", id="stale when all pids died"),
        pytest.param(
            {"etcd": True, "kube-apiserver": True},
            False,
            "stale",
            id="stale when the start that wrote the state never finished",
        ),
    ],
)
def test_classify_run(tmp_path: Path, alive: dict[str, bool], ready: bool, expected: str) -> None:
    state = state_with(tmp_path, component("etcd", 10), component("kube-apiserver", 11), ready=ready)
    assert cp.classify_run(state, lambda c: alive[c.name]) == expected


def test_no_state_is_stopped() -> None:
    assert cp.classify_run(None, lambda c: True) == "stopped"


def test_process_alive_checks_the_executable() -> None:
    assert cp.process_alive(os.getpid())
    assert not cp.process_alive(os.getpid(), "/not/this/program")
    assert not cp.process_alive(dead_pid())


# ---- kubeconfig


def test_kubeconfig_embeds_the_certificates() -> None:
    text = cp.render_kubeconfig(
        server="https://127.0.0.1:6443", ca_pem=b"CA", cert_pem=b"CERT", key_pem=b"KEY", user="admin"
    )
    doc = yaml.safe_load(text)
    (cluster,) = doc["clusters"]
    (user,) = doc["users"]
    assert doc["current-context"] == doc["contexts"][0]["name"]
    assert cluster["cluster"]["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == b"CA"
    assert base64.b64decode(user["user"]["client-certificate-data"]) == b"CERT"
    assert base64.b64decode(user["user"]["client-key-data"]) == b"KEY"


# ---- logs


def test_log_tails_keep_the_last_lines(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "etcd.log").write_text("".join(f"line {i}\n" for i in range(100)))
    assert cp.log_tails(tmp_path, lines=3) == {"etcd": "line 97\nline 98\nline 99"}


# ---- command line, with stand-in processes


def test_up_cleans_a_stale_run_dir_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / cp.STATE_FILE).write_text(state_with(tmp_path, component("etcd", dead_pid())).to_json())
    monkeypatch.setenv("MTLS_CONTROLPLANE_BIN", str(tmp_path / "no-binaries"))

    assert cp.main(["up", "--dir", str(tmp_path)]) == 1  # gets as far as the missing binaries

    out = capsys.readouterr()
    assert "stale" in out.out
    assert "make controlplane" in out.err
    assert not (tmp_path / cp.STATE_FILE).exists()


def test_down_kills_the_process_group_and_forgets_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A stand-in component with a child of its own: both must go, since down signals the whole group.
    script = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
    leader = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        (tmp_path / cp.STATE_FILE).write_text(
            state_with(tmp_path, component("etcd", leader.pid, sys.executable)).to_json()
        )
        group = wait_for(
            lambda: [
                p
                for p in Path("/proc").iterdir()
                if p.name.isdigit() and p.name != str(leader.pid) and _pgid(p) == leader.pid
            ],
            timeout=10,
            message="the stand-in component's child",
        )
        assert cp.main(["status", "--dir", str(tmp_path)]) == 0

        assert cp.main(["down", "--dir", str(tmp_path)]) == 0

        leader.wait(timeout=10)
        wait_for(
            lambda: not any(cp.process_alive(int(p.name)) for p in group),
            timeout=10,
            message="the child in the component's process group to die",
        )
        assert not (tmp_path / cp.STATE_FILE).exists()
        assert "stopped etcd" in capsys.readouterr().out
        assert cp.main(["status", "--dir", str(tmp_path)]) == 1
    finally:
        if leader.poll() is None:
            os.killpg(leader.pid, 9)
            leader.wait()


def _pgid(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


# ---- the audit policy


def test_the_audit_policy_records_bodies_of_event_creations_only() -> None:
    """No key material in the audit log: Secrets (and everything else) at Metadata level at most; only an
    Event's creation carries its body (which names the object it is about)."""
    policy = cp.audit_policy()
    assert policy["omitStages"] == ["RequestReceived", "ResponseStarted"]
    with_bodies = [r for r in policy["rules"] if r["level"] in ("Request", "RequestResponse")]
    assert with_bodies == [
        {
            "level": "Request",
            "verbs": ["create"],
            "resources": [
                {"group": "", "resources": ["events"]},
                {"group": "events.k8s.io", "resources": ["events"]},
            ],
        }
    ]
    assert {r["level"] for r in policy["rules"]} == {"None", "Request", "Metadata"}
    assert policy["rules"][-1] == {"level": "None"}  # what no rule names is not recorded


def test_audit_flags_write_the_policy_and_the_log_in_the_run_dir(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    flags = dict(f.removeprefix("--").split("=", 1) for f in cp._audit_args(tmp_path))
    assert yaml.safe_load(Path(flags["audit-policy-file"]).read_text()) == cp.audit_policy()
    assert flags["audit-log-path"] == str(tmp_path / "logs" / "audit.log")
    assert (flags["audit-log-format"], flags["audit-log-mode"], flags["audit-log-maxsize"]) == (
        "json",
        "blocking",
        "0",
    )
