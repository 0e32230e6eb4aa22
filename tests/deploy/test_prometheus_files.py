"""promtool accepts the scrape config and the alert rules, and the rules' unit tests pass.

promtool comes with the Debian package `prometheus` (installed by .ci/run). The dashboard's
queries go through promtool too, as recording rules, so a PromQL typo in a panel fails.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.monitoring_files import (
    ALERT_RULES,
    ALERT_TESTS,
    PROMETHEUS_CONFIG,
    ROOT,
    dashboard_exprs,
    load_alert_rules,
    load_dashboard,
)

pytestmark = pytest.mark.interop

PROMTOOL = shutil.which("promtool")
TIMEOUT = 60.0
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus; .ci/run)"
)


def _promtool(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *map(str, arguments)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@needs_promtool
def test_alert_rules_pass_promtool_check() -> None:
    result = _promtool("check", "rules", ALERT_RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"SUCCESS: (\d+) rules found", result.stdout)
    assert found is not None, result.stdout
    # promtool and the tests' own reader agree on the number of rules.
    assert int(found[1]) == len(load_alert_rules())


@needs_promtool
def test_scrape_config_passes_promtool_check() -> None:
    result = _promtool("check", "config", PROMETHEUS_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    # The config loads the alert rules (a rule file that is missing fails the check).
    assert "1 rule files found" in result.stdout
    assert "job_name: trelay" in PROMETHEUS_CONFIG.read_text()


@needs_promtool
def test_alert_rule_unit_tests_pass() -> None:
    result = _promtool("test", "rules", ALERT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    exprs = [
        expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
        for expr in dashboard_exprs(load_dashboard())
        if not expr.startswith("label_values(")  # a Grafana function, not PromQL
    ]
    rules = [{"record": f"dashboard:query_{n}", "expr": expr} for n, expr in enumerate(exprs)]
    # JSON is YAML: no YAML writer needed.
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


@needs_promtool
def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    # The checks above mean something: promtool does fail on a bad expression.
    broken = ALERT_RULES.read_text().replace("trelay_ready == 0", "trelay_ready == (0")
    path = tmp_path / "broken.yml"
    path.write_text(broken)
    assert _promtool("check", "rules", path).returncode != 0
