"""deploy/helm/trelay, rendered and linted by Helm's own engine, offline.

The renderer is Helm's Go SDK (v4) itself, through PyPI's `helm-python-sdk` (a C ABI over
helm.sh/helm/v4 loaded with ctypes; no helm binary, no cluster): `helm lint` and `helm
template` as the `helm` command runs them. Every rendered object is validated against
Kubernetes' OpenAPI schemas (kubernetes-validate, unknown fields refused) for the oldest
and newest versions checked; the ServiceMonitor is a Prometheus Operator CRD whose schema
is not among them, so its fields are checked here by hand against the Service it selects.
The rendered settings and arguments are loaded by trelay itself. Not checked: installing
the chart in a cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.helpers.kube_manifests import (
    NODE_IP,
    NODE_NAME,
    Object,
    by_kind,
    kubernetes_versions,
    mounted_settings,
    only_container,
    validate,
)

ROOT = Path(__file__).parents[2]
CHART = ROOT / "deploy" / "helm" / "trelay"
MANIFEST = ROOT / "deploy" / "kubernetes" / "trelay.yaml"
SECRETS = {"secrets": ["newest-secret", "older-secret"]}


def render(values: dict[str, Any] | None = None, name: str = "trelay") -> dict[str, Object]:
    """`helm template <name> deploy/helm/trelay --namespace relay` with these values."""
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values or {}, name=name, namespace="relay")
    objects = []
    for path, text in manifests.items():
        if path.endswith(".yaml"):
            objects += [item for item in yaml.safe_load_all(text) if item]
    return by_kind(objects)


def test_helm_lint_passes_without_warnings() -> None:
    report = helm.lint(str(CHART), SECRETS, strict=True, namespace="relay")
    assert report["errors"] == []
    # Severity 1 is INFO (the chart has no icon); 2 WARNING and 3 ERROR must not occur.
    assert [m for m in report["messages"] if m["severity"] > 1] == []


@pytest.mark.parametrize("version", kubernetes_versions())
@pytest.mark.parametrize("monitor", [False, True], ids=["plain", "service-monitor"])
def test_every_object_validates_against_the_kubernetes_schemas(version: str, monitor: bool) -> None:
    objects = render({**SECRETS, "serviceMonitor": {"enabled": monitor}})
    expected = {"ConfigMap", "Secret", "DaemonSet", "PodDisruptionBudget"}
    assert set(objects) == expected | ({"Service", "ServiceMonitor"} if monitor else set())
    for kind, item in objects.items():
        if kind != "ServiceMonitor":
            validate(item, version)


def test_the_rendered_settings_and_arguments_load_in_trelay(tmp_path: Path) -> None:
    objects = render(SECRETS)
    settings = mounted_settings(objects, tmp_path)
    assert settings.auth.shared_secrets == ("newest-secret", "older-secret")
    assert settings.relay.address == NODE_IP  # status.hostIP
    # The operator port on the pod IP, never 0.0.0.0 with host networking.
    [http] = settings.http.listen
    assert (http.host, http.port) == (NODE_IP, 9478)
    assert settings.drain.timeout == 3600
    pod = objects["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["terminationGracePeriodSeconds"] == settings.drain.timeout + 60
    container = only_container(objects["DaemonSet"])
    ports = {p["name"]: p for p in container["ports"]}
    assert ports["http"]["containerPort"] == http.port
    assert {(a.port, "UDP") for a in settings.listen.udp} <= {
        (p["containerPort"], p["protocol"]) for p in ports.values()
    }
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}
    assert container["lifecycle"]["preStop"]["exec"]["command"][-1].startswith("kill -TERM 1;")


def test_the_chart_and_the_plain_manifest_run_the_same_relay() -> None:
    plain = by_kind(yaml.safe_load_all(MANIFEST.read_text()))
    chart = render(SECRETS)
    plain_container = only_container(plain["DaemonSet"])
    chart_container = only_container(chart["DaemonSet"])
    assert chart_container["image"] == plain_container["image"] == "trelay:0.1.0"
    for key in ("securityContext", "lifecycle", "resources"):
        assert chart_container[key] == plain_container[key], key
    plain_pod = plain["DaemonSet"]["spec"]["template"]["spec"]
    chart_pod = chart["DaemonSet"]["spec"]["template"]["spec"]
    for key in ("terminationGracePeriodSeconds", "hostNetwork", "dnsPolicy"):
        assert chart_pod[key] == plain_pod[key], key
    assert chart_pod["securityContext"]["runAsNonRoot"] is True


def test_values_change_what_they_say(tmp_path: Path) -> None:
    values = {**SECRETS, "drain": {"timeout": 600, "graceMargin": 30}, "httpPort": 9100,
              "image": {"repository": "registry.example.org/trelay", "tag": "0.1.1"},
              "externalAddress": "203.0.113.10", "podDisruptionBudget": {"enabled": False},
              "apiKeys": "[keys]\n"}  # fmt: skip
    objects = render(values)
    assert "PodDisruptionBudget" not in objects
    container = only_container(objects["DaemonSet"])
    assert container["image"] == "registry.example.org/trelay:0.1.1"
    assert objects["DaemonSet"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 630
    args = container["args"]
    assert args[args.index("--drain-timeout") + 1] == "600"
    assert args[args.index("--listen-http") + 1] == "$(POD_IP):9100"
    assert args[args.index("--external-address") + 1] == "203.0.113.10"
    assert args[args.index("--api-keys") + 1] == "/etc/trelay-secrets/keys.toml"
    assert objects["Secret"]["stringData"]["keys.toml"] == "[keys]\n"


def test_the_relays_join_a_fleet_through_redis(tmp_path: Path) -> None:
    fleet = {"redisUrl": "rediss://redis.relay.svc:6380/0", "region": "eu-central",
             "redisPassword": "r3dis"}  # fmt: skip
    objects = render({**SECRETS, "fleet": fleet, "ports": {"turn": 3478, "turnTls": 5349}})
    for version in kubernetes_versions():
        validate(objects["DaemonSet"], version)
    settings = mounted_settings(objects, tmp_path)
    assert settings.fleet is not None
    assert settings.fleet.redis_url == "rediss://redis.relay.svc:6380/0"
    assert (settings.fleet.node_id, settings.fleet.region) == (NODE_NAME, "eu-central")
    assert settings.fleet.redis_password == "r3dis"  # from the chart's Secret, not an arg
    assert "r3dis" not in str(only_container(objects["DaemonSet"])["args"])
    assert settings.fleet.public_uris == (
        f"turn:{NODE_IP}:3478?transport=udp",
        f"turn:{NODE_IP}:3478?transport=tcp",
        f"turns:{NODE_IP}:5349?transport=tcp",
    )
    # Behind a 1:1 NAT the node publishes the address clients reach.
    behind_nat = render({**SECRETS, "fleet": fleet, "externalAddress": "203.0.113.10"})
    nat_fleet = mounted_settings(behind_nat, tmp_path / "nat").fleet
    assert nat_fleet is not None
    assert nat_fleet.public_uris[0] == "turn:203.0.113.10:3478?transport=udp"


def test_without_a_redis_url_each_relay_is_alone(tmp_path: Path) -> None:
    settings = mounted_settings(render(SECRETS), tmp_path)
    assert settings.fleet is None


def test_an_existing_secret_replaces_the_charts_own() -> None:
    objects = render({"existingSecret": "my-trelay-secrets"})
    assert "Secret" not in objects
    volumes = objects["DaemonSet"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "secrets", "secret": {"secretName": "my-trelay-secrets"}} in volumes


def test_without_a_secret_the_render_fails_and_says_why() -> None:
    with pytest.raises(helm.HelmError, match="secrets: give at least one TURN REST secret"):
        render({})


def test_the_pod_disruption_budget_and_service_monitor_select_the_relays() -> None:
    objects = render({**SECRETS, "serviceMonitor": {"enabled": True, "labels": {"team": "rtc"}}})
    pod_labels = objects["DaemonSet"]["spec"]["template"]["metadata"]["labels"]
    selector = objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert objects["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    service, monitor = objects["Service"], objects["ServiceMonitor"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    # The ServiceMonitor (no schema offline): apiVersion, selector, port name, path.
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["team"] == "rtc"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["relay"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # The job label gives the job name the alert rules expect.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "trelay"
    assert set(monitor["spec"]) <= {"jobLabel", "selector", "namespaceSelector", "endpoints"}
