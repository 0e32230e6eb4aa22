"""Read the monitoring files in deploy/: the dashboard's and the alert rules' PromQL.

There is no YAML parser in the test environment, so the alert rules are read by a narrow
reader for the layout deploy/prometheus/trelay-alerts.yml uses (`- alert:` entries whose
`expr:` is one line or a `|` block). It is strict rather than general: the tests compare
what it found with the rule count promtool reports and with the `- alert:` lines, so a
layout it does not understand fails a test instead of hiding an expression.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "trelay-dashboard.json"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERT_RULES = ROOT / "deploy" / "prometheus" / "trelay-alerts.yml"
ALERT_TESTS = ROOT / "tests" / "deploy" / "trelay-alerts.test.yml"

_METRIC = re.compile(r"(?<![A-Za-z0-9_:])((?:trelay|process)_[a-z_]+)(?![A-Za-z0-9_:])")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str, histograms: frozenset[str]) -> set[str]:
    """The trelay_* and process_* names in `expr`; histogram series names -> the family."""
    names = set()
    for found in _METRIC.findall(expr):
        name = found
        for suffix in HISTOGRAM_SUFFIXES:
            if found.endswith(suffix) and found.removesuffix(suffix) in histograms:
                name = found.removesuffix(suffix)
        names.add(name)
    return names


def load_dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and query variables."""
    exprs = [
        target["expr"]
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            exprs.append(query["query"] if isinstance(query, dict) else str(query))
    return exprs


@dataclass
class AlertRule:
    name: str
    expr: str = ""
    for_: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


_KEY = re.compile(r"^(?P<indent> *)(?:- )?(?P<key>[a-z_]+):(?P<value>.*)$")


def load_alert_rules(text: str | None = None) -> list[AlertRule]:
    """The `- alert:` rules of trelay-alerts.yml, with expr, for, labels, annotations."""
    lines = (ALERT_RULES.read_text() if text is None else text).splitlines()
    rules: list[AlertRule] = []
    section = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        match = _KEY.match(line)
        if match is None or line.lstrip().startswith("#"):
            continue
        key, value = match["key"], match["value"].strip()
        if key == "alert":
            rules.append(AlertRule(value))
            section = ""
            continue
        if not rules:
            continue
        rule = rules[-1]
        if value in ("|", ">-", ">", "|-"):
            # A block scalar: the following lines indented deeper than the key.
            block, index = _block(lines, index, len(match["indent"]))
            value = block
        if key == "expr":
            rule.expr = value
        elif key == "for":
            rule.for_ = value
        elif key in ("labels", "annotations") and not value:
            section = key
        elif section == "labels":
            rule.labels[key] = value.strip('"')
        elif section == "annotations":
            rule.annotations[key] = value.strip('"')
    return rules


def _block(lines: list[str], index: int, indent: int) -> tuple[str, int]:
    body: list[str] = []
    while index < len(lines) and (
        not lines[index].strip() or len(lines[index]) - len(lines[index].lstrip()) > indent
    ):
        body.append(lines[index].strip())
        index += 1
    return " ".join(part for part in body if part), index
