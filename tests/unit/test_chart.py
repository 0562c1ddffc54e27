"""The Helm chart as rendered by `helm template` (no cluster): lint, one source for CRDs and alerts,
deploy/ equal to the chart, least-privilege RBAC with no wildcard, a hardened pod, documented values."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mtls_operator.observability.metrics import Metrics
from mtls_operator.testing.controlplane import BinariesMissingError, find_binaries

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mtls-operator"
MANIFESTS = REPO / "deploy" / "mtls-operator.yaml"
ALL_ON = (
    "--set",
    "serviceMonitor.enabled=true",
    "--set",
    "prometheusRule.enabled=true",
    "--set",
    "dashboard.enabled=true",
)
NAMESPACED = ("--set", "scope.namespaces={team-a,team-b}")


@pytest.fixture(scope="module")
def helm() -> str:
    try:
        found = find_binaries().helm
    except BinariesMissingError as error:
        found, why = None, str(error)
    else:
        why = "the control-plane binaries have no helm"
    if found is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(why, pytrace=False)
        pytest.skip(f"{why}; `make controlplane` builds it")
    return str(found)


def template(helm: str, *args: str, namespace: str = "mtls-system") -> list[dict[str, Any]]:
    out = subprocess.run(
        [helm, "template", "mtls-operator", str(CHART), "--namespace", namespace, *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("args", [(), ALL_ON, NAMESPACED], ids=["defaults", "everything on", "namespaced"])
def test_helm_lint_is_clean(helm: str, args: tuple[str, ...]) -> None:
    result = subprocess.run([helm, "lint", "--strict", str(CHART), *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_the_chart_crds_are_crds_dir_itself() -> None:
    """One source of truth: the chart reads crds/ through the crds-src symlink, so it cannot drift."""
    link = CHART / "crds-src"
    assert link.is_symlink() and link.resolve() == (REPO / "crds").resolve()


def test_rendered_crds_equal_crds_dir_apart_from_labels(helm: str) -> None:
    rendered = {d["metadata"]["name"]: d for d in of_kind(template(helm), "CustomResourceDefinition")}
    for path in (REPO / "crds").glob("*.yaml"):
        source = yaml.safe_load(path.read_text())
        got = rendered[source["metadata"]["name"]]
        assert got["spec"] == source["spec"]
        assert got["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert of_kind(template(helm, "--set", "crds.enabled=false"), "CustomResourceDefinition") == []
    no_keep = of_kind(template(helm, "--set", "crds.keep=false"), "CustomResourceDefinition")
    assert all("helm.sh/resource-policy" not in (d["metadata"].get("annotations") or {}) for d in no_keep)


def test_deploy_manifests_are_what_the_chart_renders(helm: str) -> None:
    """deploy/ is `make manifests` output: two header comments, then `helm template` without the CRDs
    (applied from crds/ itself), as in mk/chart.mk."""
    rendered = subprocess.run(
        [
            helm,
            "template",
            "mtls-operator",
            str(CHART),
            "--namespace",
            "mtls-system",
            "--set",
            "crds.enabled=false",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = MANIFESTS.read_text().splitlines(keepends=True)
    assert lines[0].startswith("# Rendered from charts/mtls-operator by `make manifests`")
    assert "".join(lines[2:]) == rendered, "deploy/ is stale: run `make manifests`"


def rbac_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for d in docs if d["kind"] in {"Role", "ClusterRole"} for rule in d.get("rules", [])]


@pytest.mark.parametrize(
    "args", [(), NAMESPACED, ALL_ON], ids=["cluster-wide", "namespaced", "everything on"]
)
def test_rbac_has_no_wildcard(helm: str, args: tuple[str, ...]) -> None:
    rules = rbac_rules(template(helm, *args))
    assert rules
    for rule in rules:
        for field in ("verbs", "resources", "apiGroups", "resourceNames"):
            assert "*" not in rule.get(field, []), f"wildcard in {field}: {rule}"
        assert not rule.get("nonResourceURLs"), rule
        if rule["resources"] == ["signers"]:
            # Signer verbs, on this project's signer names only (never kubernetes.io/*).
            assert rule["resourceNames"] == ["mtls.dev/*"] and set(rule["verbs"]) <= {"attest", "sign"}, rule
            continue
        assert set(rule["verbs"]) <= {"get", "list", "watch", "create", "update", "patch", "delete"}, rule


def test_rbac_deletes_nothing_but_secrets_and_never_escalates(helm: str) -> None:
    for rule in rbac_rules(template(helm, *ALL_ON)):
        if "delete" in rule["verbs"]:
            assert rule["resources"] == ["secrets"], rule  # a finished CA rotation's staging Secret only
        assert "patch" not in rule["verbs"] or not {"secrets", "configmaps"} & set(rule["resources"])
        assert not {"roles", "clusterroles", "rolebindings", "clusterrolebindings"} & set(rule["resources"])
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"])
        assert "serviceaccounts/token" not in rule["resources"]
        if {"pods", "serviceaccounts", "nodes"} & set(rule["resources"]):
            # The Pod Certificate signer reads the pod, ServiceAccount and node a request names: get only.
            assert rule["verbs"] == ["get"], rule


def test_rbac_template_explains_each_rule() -> None:
    text = (CHART / "templates" / "rbac.yaml").read_text()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("- apiGroups:"):
            assert lines[i - 1].lstrip().startswith("#"), f"rule without a comment: {line} (line {i + 1})"


def test_namespaced_scope_has_no_cluster_scoped_rbac(helm: str) -> None:
    docs = template(helm, *NAMESPACED)
    assert of_kind(docs, "ClusterRole") == [] and of_kind(docs, "ClusterRoleBinding") == []
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in of_kind(docs, "Role")}
    assert ("team-a", "mtls-operator") in roles and ("team-b", "mtls-operator") in roles
    args = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args


def test_the_pod_is_hardened_and_probed(helm: str) -> None:
    (deployment,) = of_kind(template(helm), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["ports"][0]["containerPort"] == 9402
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert deployment["spec"]["replicas"] >= 2
    assert "--leader-elect" in container["args"]
    assert {e["name"] for e in container["env"]} >= {"POD_NAME", "POD_NAMESPACE"}


def test_more_than_one_replica_without_leader_election_is_refused(helm: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as info:
        template(helm, "--set", "replicaCount=2", "--set", "leaderElection.enabled=false")
    assert "leaderElection.enabled" in info.value.stderr
    (deployment,) = of_kind(
        template(helm, "--set", "replicaCount=1", "--set", "leaderElection.enabled=false"), "Deployment"
    )
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_values_outside_the_schema_are_refused(helm: str) -> None:
    for bad in ("replicaCount=-1", "scope.namespaces={team-*}", "operator.logLevel=LOUD", "nosuchvalue=1"):
        with pytest.raises(subprocess.CalledProcessError):
            template(helm, "--set", bad)


def test_optional_monitoring_objects_are_opt_in(helm: str) -> None:
    kinds = {d["kind"] for d in template(helm)}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "ConfigMap"}
    assert {"Service", "PodDisruptionBudget", "ServiceAccount", "Deployment"} <= kinds
    kinds = {d["kind"] for d in template(helm, *ALL_ON)}
    assert {"ServiceMonitor", "PrometheusRule", "ConfigMap"} <= kinds


def test_the_prometheus_rule_ships_the_promtool_tested_file(helm: str) -> None:
    (rule,) = of_kind(template(helm, *ALL_ON), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())


def exported_metric_names() -> set[str]:
    text = Metrics().render().decode()
    names = set(re.findall(r"^# TYPE (\S+) (\S+)", text, re.M))
    out = set()
    for name, kind in names:
        out.add(name)
        if kind == "counter":
            out.add(name + "_total")
        if kind == "histogram":
            out.update({name + "_bucket", name + "_sum", name + "_count"})
        if kind == "info":
            out.add(name + "_info")
    return out


def metric_names_in(expr: str) -> set[str]:
    return set(re.findall(r"\b(mtls_[a-z_]+)", expr))


def test_alerts_and_dashboard_use_only_metrics_the_operator_exports(helm: str) -> None:
    exported = exported_metric_names()
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    for group in alerts["groups"]:
        for rule in group["rules"]:
            assert metric_names_in(rule["expr"]) <= exported, rule["alert"]
    (configmap,) = of_kind(template(helm, *ALL_ON), "ConfigMap")
    dashboard = json.loads(configmap["data"]["mtls-operator.json"])
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("expiry", "not-ready", "issuance rate", "latency", "restarts"):
        assert topic in titles
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert metric_names_in(target["expr"]) <= exported, panel["title"]


def test_every_value_is_documented() -> None:
    """Each key in values.yaml has a `# --` comment, except the inside of an object documented whole."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented_block: int | None = None  # indent of a key whose comment covers its children
    missing = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not m or line.lstrip().startswith("-"):
            continue
        indent = len(m.group(1))
        if documented_block is not None and indent > documented_block:
            continue
        documented_block = None
        comment = []
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            comment.append(lines[j].strip())
            j -= 1
        has_children = line.rstrip().endswith(":")
        if any(c.startswith("# --") for c in comment):
            if has_children:
                documented_block = indent
        elif not has_children:
            missing.append(line.strip())
    assert missing == []


def test_every_operator_flag_is_a_chart_value(helm: str) -> None:
    """Each knob of `mtls-operator --help` is set by the chart (with leader election and scope on), so no
    tuning needs a hand-edited Deployment; and the rendered args parse."""
    from mtls_operator.controllers.config import build_parser, parse_config

    parser = build_parser({})
    docs = template(helm, "--set", "leaderElection.enabled=true", *NAMESPACED)
    (deployment,) = of_kind(docs, "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    (container,) = [c for c in containers if c["name"] == "operator"]
    args = container.get("args", [])
    env = {e["name"]: e.get("value", "") for e in container.get("env", []) if "value" in e}
    env_names = {e["name"] for e in container.get("env", [])}  # POD_NAMESPACE comes from the downward API
    set_by_args = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    unset = []
    for action in parser._actions:
        long = [o for o in action.option_strings if o.startswith("--")]
        if not long or long[0] in ("--help", "--all-namespaces", "--namespace"):
            continue
        variables = re.findall(r"\((MTLS_[A-Z_]+|POD_[A-Z_]+)", action.help or "")
        if not set(long) & set_by_args and not set(variables) & env_names:
            unset.append(long[0])
    assert unset == []
    config = parse_config([a for a in args if a.startswith("-")], {**env, "POD_NAMESPACE": "mtls-system"})
    assert config.cluster_namespace == "mtls-system"
    assert config.leader_election.enabled
