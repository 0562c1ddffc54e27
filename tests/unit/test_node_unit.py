"""Pure logic of the test node's launcher and image builder (no root, no cluster)."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from mtls_operator.testing.controlplane import ComponentState, ControlPlane
from mtls_operator.testing.images import OPERATOR_RECIPE, layer_from_dir, oci_archive, render_dockerfile
from mtls_operator.testing.netns import Forwarder, parse_hostport
from mtls_operator.testing.node import Node, NodeState, cgroup_v1_hierarchies

REPO = Path(__file__).resolve().parents[2]

MOUNTINFO = """\
25 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:23 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
27 26 0:24 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
28 26 0:25 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
29 26 0:26 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
30 26 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_the_v1_hierarchies_are_read_from_mountinfo_and_cgroup2_is_not_one() -> None:
    assert cgroup_v1_hierarchies(MOUNTINFO) == [
        Path("/sys/fs/cgroup/cpu"),
        Path("/sys/fs/cgroup/memory"),
        Path("/sys/fs/cgroup/systemd"),
    ]
    assert cgroup_v1_hierarchies(MOUNTINFO.splitlines()[-1]) == []


def test_the_dockerfile_is_what_the_image_recipe_writes() -> None:
    assert (REPO / "Dockerfile").read_text() == render_dockerfile(), "run `make dockerfile`"
    text = render_dockerfile()
    for pin in OPERATOR_RECIPE.extra_pins:
        assert pin in text
    assert OPERATOR_RECIPE.passwd in text, "kopf needs a passwd entry for the image's uid"


def test_an_oci_archive_is_deterministic_and_its_digests_check(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_text("#!/bin/sh\n")
    layer = layer_from_dir(root)
    assert layer == layer_from_dir(root), "same files, same layer bytes"
    first = oci_archive(
        ref="docker.io/library/x:1", layer=layer, config={"Cmd": ["/bin/tool"]}, out=tmp_path / "a.tar"
    )
    second = oci_archive(
        ref="docker.io/library/x:1", layer=layer, config={"Cmd": ["/bin/tool"]}, out=tmp_path / "b.tar"
    )
    assert first == second
    with tarfile.open(tmp_path / "a.tar") as tar:
        names = tar.getnames()
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        for name in names:
            if name.startswith("blobs/sha256/"):
                data = tar.extractfile(name).read()  # type: ignore[union-attr]
                assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    assert "oci-layout" in names
    annotations = index["manifests"][0]["annotations"]
    assert annotations["io.containerd.image.name"] == "docker.io/library/x:1"


def test_host_port_parsing_and_the_forwarder_only_connects_to_loopback() -> None:
    assert parse_hostport("127.0.0.1:6443") == ("127.0.0.1", 6443)
    assert parse_hostport("10.0.0.1:443") == ("10.0.0.1", 443)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_hostport("127.0.0.1")
    with pytest.raises(ValueError, match="loopback"):
        Forwarder([], ("10.0.0.1", 443))
    Forwarder([], ("127.0.0.1", 443))


def test_node_state_round_trips() -> None:
    state = NodeState(
        node_dir="/run/x/node",
        netns="mtls-node-1",
        cgroup_root="/mtls-node-1",
        containerd_socket="/run/x/node/containerd/containerd.sock",
        components=(ComponentState(name="kubelet", pid=42, exe="/bin/kubelet", log="/l", health=""),),
    )
    assert NodeState.from_json(state.to_json()) == state


def test_the_kubelet_is_configured_for_cgroup_v1_and_the_identity_gates(tmp_path: Path) -> None:
    plane = ControlPlane(
        run_dir=tmp_path, server="https://127.0.0.1:1", kubeconfig=tmp_path / "k", binaries=None
    )
    node = Node(
        plane=plane,
        node_dir=tmp_path / "node",
        netns="mtls-node-x",
        cgroup_root="/mtls-node-x",
        containerd_socket=tmp_path / "node" / "c.sock",
    )
    (tmp_path / "node" / "config").mkdir(parents=True)
    config = json.loads(node._kubelet_config(10250).read_text())
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["failCgroupV1"] is False
    assert config["cgroupRoot"] == "/mtls-node-x"
    assert config["address"] == "127.0.0.1"
    assert config["readOnlyPort"] == 0
    assert config["featureGates"] == {
        "ClusterTrustBundle": True,
        "ClusterTrustBundleProjection": True,
        "PodCertificateRequest": True,
    }


def test_the_image_digest_reads_the_package_only() -> None:
    """The build rewrites operator/*.egg-info, and the test harness is not in the image: neither may
    change the operator image's tag, or every run would rebuild it."""
    from mtls_operator.testing import images

    files = images._source_files(REPO)
    assert REPO / "pyproject.toml" in files
    assert any(p.name == "main.py" and p.parent.name == "mtls_operator" for p in files)
    assert not [
        p for p in files if "egg-info" in str(p) or p.is_relative_to(REPO / "operator/mtls_operator/testing")
    ]
