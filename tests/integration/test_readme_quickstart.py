"""The README's quick start, run as written against a fresh test control plane.

Its three shell blocks (install with the examples, upgrade, uninstall) run verbatim with bash, with the
control plane's kubectl and helm first on PATH, in a copy of charts/, crds/ and examples/, so that the
upgrade can meet a changed CRD: between install and upgrade the copy's CRD gets a new printer column,
which the upgrade must bring to the cluster. After the uninstall the CRDs and the certificates stay.
No node runs here: the operator's pods stay Pending, which the quick start does not wait for.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mtls_operator.testing.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[2]


def quick_start_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


@pytest.fixture
def fresh_plane(controlplane_binaries: Any, tmp_path: Path) -> Iterator[ControlPlane]:
    """A control plane of its own: no CRDs applied by other suites, as on a new cluster."""
    plane = ControlPlane.start(
        tmp_path / "plane", bin_dir=controlplane_binaries.bin_dir, die_with_parent=True
    )
    yield plane
    plane.stop()


def run_block(block: str, cwd: Path, plane: ControlPlane, bin_dir: Path) -> str:
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "KUBECONFIG": str(plane.kubeconfig),
        "HELM_CACHE_HOME": str(cwd / ".helm-cache"),
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, (
        f"README block failed:\n{block}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    return result.stdout


def kubectl_json(plane: ControlPlane, bin_dir: Path, *args: str) -> Any:
    out = subprocess.run(
        [str(bin_dir / "kubectl"), "--kubeconfig", str(plane.kubeconfig), *args, "-o", "yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return yaml.safe_load(out)


def test_the_readme_quick_start_installs_upgrades_a_crd_and_uninstalls(
    fresh_plane: ControlPlane, controlplane_binaries: Any, tmp_path: Path
) -> None:
    if controlplane_binaries.helm is None:
        pytest.fail("no helm among the control-plane binaries: `make controlplane`")
    bin_dir = controlplane_binaries.bin_dir
    install, upgrade, uninstall = quick_start_blocks()
    work = tmp_path / "repo"
    for sub in ("charts", "crds", "examples"):
        shutil.copytree(REPO / sub, work / sub, symlinks=True)

    listing = run_block(install, work, fresh_plane, bin_dir)
    assert "demo-root-mldsa" in listing
    crd_name = "mtlscertificates.mtls.dev"
    crd = kubectl_json(fresh_plane, bin_dir, "get", "crd", crd_name)
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == "mtls-operator"

    # A new chart version with a changed CRD: one more printer column.
    path = next(
        p
        for p in (work / "crds").glob("*.yaml")
        if yaml.safe_load(p.read_text())["metadata"]["name"] == crd_name
    )
    doc = yaml.safe_load(path.read_text())
    for version in doc["spec"]["versions"]:
        version.setdefault("additionalPrinterColumns", []).append(
            {"name": "Upgraded", "type": "string", "jsonPath": ".metadata.uid"}
        )
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    run_block(upgrade, work, fresh_plane, bin_dir)
    crd = kubectl_json(fresh_plane, bin_dir, "get", "crd", crd_name)
    columns = {c["name"] for v in crd["spec"]["versions"] for c in v.get("additionalPrinterColumns", [])}
    assert "Upgraded" in columns, "helm upgrade did not update the CRD"

    run_block(uninstall, work, fresh_plane, bin_dir)
    deployments = kubectl_json(fresh_plane, bin_dir, "get", "deployments", "-n", "mtls-system")["items"]
    assert deployments == [], "the operator is uninstalled"
    assert kubectl_json(fresh_plane, bin_dir, "get", "crd", crd_name)["metadata"]["name"] == crd_name
    issuer = kubectl_json(fresh_plane, bin_dir, "get", "mtlsissuer", "demo-root-mldsa", "-n", "demo")
    assert issuer["metadata"]["name"] == "demo-root-mldsa", "certificates and issuers stay"
