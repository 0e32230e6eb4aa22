"""The dashboard and the alert rules use only metrics trelay exports, and cover them.

`known_metric_names()` is the one place the list comes from: the names a live `trelay
serve` serves on /metrics (`tests.helpers.live_scrape`).
"""

from __future__ import annotations

import pytest

from tests.helpers.live_scrape import scraped_metrics
from tests.helpers.monitoring_files import (
    ALERT_RULES,
    AlertRule,
    dashboard_exprs,
    dashboard_panels,
    load_alert_rules,
    load_dashboard,
    metric_names,
)

# The metrics operators rely on; the dashboard must show each of them.
TRELAY_METRICS = frozenset(
    {
        "trelay_allocations_active",
        "trelay_allocations_created_total",
        "trelay_allocations_ended_total",
        "trelay_permissions_active",
        "trelay_channels_active",
        "trelay_relayed_datagrams_total",
        "trelay_relayed_bytes_total",
        "trelay_dropped_datagrams_total",
        "trelay_requests_total",
        "trelay_request_duration_seconds",
        "trelay_auth_challenges_total",
        "trelay_auth_failures_total",
        "trelay_quota_rejections_total",
        "trelay_relay_ports",
        "trelay_ready",
        "trelay_draining",
        "trelay_build_info",
        # The fleet's moving parts, served by every node (0 without a fleet).
        "trelay_fleet_redirecting",
        "trelay_usage_records_total",
        "trelay_usage_queue_records",
        "trelay_revocations",
    }
)


def known_metric_names() -> frozenset[str]:
    """Every metric name a live trelay's /metrics serves (histograms by family name)."""
    return scraped_metrics()[0]


def known_histograms() -> frozenset[str]:
    """Family names whose series are <name>_bucket, <name>_sum and <name>_count."""
    return scraped_metrics()[1]


def test_a_live_node_serves_every_metric_of_the_issue() -> None:
    assert TRELAY_METRICS - known_metric_names() == set()
    assert "process_cpu_seconds_total" in known_metric_names()


def _unknown(exprs: list[str]) -> dict[str, set[str]]:
    known = known_metric_names()
    found = {expr: metric_names(expr, known_histograms()) - known for expr in exprs}
    return {expr: names for expr, names in found.items() if names}


def test_name_parser() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le) (rate(trelay_request_duration_seconds_bucket"
        '{instance=~"$instance"}[5m]))) + trelay_ready_count + rate(process_cpu_seconds_total[1m])'
        " + other_trelay_thing"
    )
    assert metric_names(expr, known_histograms()) == {
        "trelay_request_duration_seconds",
        "trelay_ready_count",  # not a histogram: kept, so it is reported as unknown
        "process_cpu_seconds_total",
    }
    assert _unknown([expr]) == {expr: {"trelay_ready_count"}}


def test_dashboard_uses_only_known_metrics() -> None:
    exprs = dashboard_exprs(load_dashboard())
    assert len(exprs) > 15
    assert _unknown(exprs) == {}


def test_dashboard_shows_every_trelay_metric() -> None:
    used = set().union(
        *(metric_names(e, known_histograms()) for e in dashboard_exprs(load_dashboard()))
    )
    assert TRELAY_METRICS - used == set()


def test_alert_rules_use_only_known_metrics() -> None:
    rules = load_alert_rules()
    # The reader found every rule in the file, each with an expression.
    assert len(rules) == ALERT_RULES.read_text().count("- alert:") >= 4
    assert all(rule.expr for rule in rules)
    assert _unknown([rule.expr for rule in rules]) == {}


@pytest.mark.parametrize("rule", load_alert_rules(), ids=lambda rule: rule.name)
def test_alert_rule_has_for_severity_and_annotations(rule: AlertRule) -> None:
    assert rule.for_.endswith("m")
    assert rule.labels.get("severity") in {"warning", "critical"}
    assert rule.annotations.get("summary")
    assert rule.annotations.get("description")


def test_alert_rules_cover_the_issue() -> None:
    exprs = {rule.name: rule.expr for rule in load_alert_rules()}
    assert "trelay_relay_ports" in exprs["TrelayRelayPortPoolNearlyExhausted"]
    spike = exprs["TrelayAuthFailureSpike"]
    assert "trelay_auth_failures_total[1h]" in spike
    # The challenge every Allocate starts with is counted apart, never as a failure.
    assert "challenges" not in spike and "missing" not in spike
    assert "trelay_dropped_datagrams_total" in exprs["TrelayHighDropRate"]
    # A node draining on purpose (a rolling restart keeping its calls) does not page.
    # Records to the log page only in a fleet (a full queue), never on a node alone.
    to_log = exprs["TrelayUsageRecordsToLog"]
    assert 'trelay_usage_records_total{sink="log"}' in to_log
    assert "trelay_usage_queue_records" in to_log
    assert exprs["TrelayNodeNotReady"] == (
        "trelay_ready == 0 unless on (instance, job) trelay_draining == 1"
    )


def test_dashboard_shape() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["includeAll"] is True
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    panels = list(dashboard_panels(dashboard))
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            # Every query follows the instance picker.
            assert 'instance=~"$instance"' in target["expr"], panel["title"]
    titles = " ".join(p["title"].lower() for p in panels)
    for word in ["bits/s", "datagrams/s", "dropped", "active allocations", "created and ended",
                 "method and code", "authentication failures", "p50 / p99", "port pool",
                 "authentication challenges", "ready", "draining", "cpu",
                 "memory", "usage records", "queued for redis", "redirecting",
                 "revoked"]:  # fmt: skip
        assert word in titles, word
