"""The shipped alert rules (charts/mtls-operator/files/alerts.yaml) under `promtool`: they parse, each one
fires on synthetic series where it should and stays silent where it should not (tests/alerts/*.yaml), and
each has what a person needs (summary, description, severity, a runbook section)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "charts" / "mtls-operator" / "files" / "alerts.yaml"
TESTS = sorted((REPO / "tests" / "alerts").glob("*.yaml"))
RUNBOOK = REPO / "docs" / "runbook.md"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is missing: `make prometheus-deps` installs Debian's prometheus package"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=REPO)


def test_the_rules_parse(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_behaves_on_synthetic_series(promtool: str) -> None:
    result = run(promtool, "test", "rules", *map(str, TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_expression_fails_the_check(promtool: str, tmp_path: Path) -> None:
    """The guard works: a typo in an expression is caught here, not at Prometheus reload time."""
    broken = RULES.read_text().replace(
        "max by (namespace, name) (mtls_certificate_ready_status",
        "max by (namespace, name (mtls_certificate_ready_status",
        1,
    )
    assert broken != RULES.read_text()
    path = tmp_path / "alerts.yaml"
    path.write_text(broken)
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode != 0
    assert "parse error" in (result.stdout + result.stderr)


def test_a_wrong_threshold_fails_the_unit_tests(promtool: str, tmp_path: Path) -> None:
    """And a rule that parses but alerts at the wrong time fails its promtool unit test."""
    shifted = RULES.read_text().replace("> 3600", "> 36000", 1)
    assert shifted != RULES.read_text()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "alerts.yaml").write_text(shifted)
    test = (REPO / "tests" / "alerts" / "certificates.yaml").read_text()
    test = test.replace("../../charts/mtls-operator/files/alerts.yaml", "rules/alerts.yaml")
    (tmp_path / "certificates.yaml").write_text(test)
    result = subprocess.run(
        [promtool, "test", "rules", "certificates.yaml"], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode != 0
    assert "MTLSCertificateRenewalOverdue" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for path in TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in rules()}
    assert names - fires == set(), "alerts never shown to fire"
    assert names - silent == set(), "alerts never shown to stay silent"


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_every_alert_tells_a_person_what_to_do(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"warning", "critical"}
    annotations = rule["annotations"]
    assert annotations["summary"] and len(annotations["description"]) > 80
    anchor = annotations["runbook"].split("#", 1)[1]
    headings = {
        re.sub(r"[^a-z0-9-]", "", line.lstrip("#").strip().lower().replace(" ", "-"))
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("## ")
    }
    assert anchor in headings, f"docs/runbook.md has no section for {rule['alert']}"
