"""deploy/kubernetes/trelay.yaml and deploy/Dockerfile agree with trelay itself: the
ConfigMap's settings load, the container's command is one `trelay serve` accepts, the
probes and the Prometheus annotation name the operator port and endpoints trelay serves,
and the ports match. (No cluster or container engine runs here: this checks what can be
checked without one.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from trelay.config.settings import load_settings
from trelay.ops.http_app import NodeStatus, build_app
from trelay.process.cli import build_parser, flags_from

ROOT = Path(__file__).parents[2]
MANIFEST = ROOT / "deploy" / "kubernetes" / "trelay.yaml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def documents() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text())}


def container() -> dict[str, Any]:
    spec = documents()["DaemonSet"]["spec"]["template"]["spec"]
    [only] = spec["containers"]
    return dict(only)


def mount(name: str) -> str:
    return str(next(m["mountPath"] for m in container()["volumeMounts"] if m["name"] == name))


def test_the_config_map_and_the_command_make_valid_settings(tmp_path: Path) -> None:
    docs = documents()
    config_dir = tmp_path / mount("config").strip("/")
    secrets_dir = tmp_path / mount("secrets").strip("/")
    config_dir.mkdir(parents=True)
    secrets_dir.mkdir(parents=True)
    for name, text in docs["ConfigMap"]["data"].items():
        (config_dir / name).write_text(text.replace("/etc/", f"{tmp_path}/etc/"))
    for name, text in docs["Secret"]["stringData"].items():
        (secrets_dir / name).write_text(text)
    args = [a.replace("$(HOST_IP)", "10.0.0.5") for a in container()["args"]]
    args = [a.replace("/etc/", f"{tmp_path}/etc/") for a in args]
    arguments = build_parser().parse_args(args)
    settings = load_settings(arguments.config, flags_from(arguments))
    assert settings.relay.address == "10.0.0.5"
    assert settings.auth.shared_secrets == ("replace-with-a-long-random-secret",)
    ports = {(p["containerPort"], p["protocol"]) for p in container()["ports"]}
    assert {(a.port, "UDP") for a in settings.listen.udp} <= ports
    assert {(a.port, "TCP") for a in settings.listen.tcp} <= ports
    [http] = settings.http.listen
    assert (http.port, "TCP") in ports
    annotations = docs["DaemonSet"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(http.port)
    for probe in ("readinessProbe", "livenessProbe"):
        assert container()[probe]["httpGet"]["port"] == http.port


def test_the_probes_ask_endpoints_trelay_serves() -> None:
    paths = {route.path for route in build_app(NodeStatus()).routes}  # type: ignore[attr-defined]
    assert container()["readinessProbe"]["httpGet"]["path"] == "/readyz" in paths
    assert container()["livenessProbe"]["httpGet"]["path"] == "/healthz" in paths


def test_the_grace_period_leaves_time_to_drain() -> None:
    from trelay.process.serve import DRAIN_GRACE_SECONDS

    spec = documents()["DaemonSet"]["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] > DRAIN_GRACE_SECONDS + 5
    assert spec["hostNetwork"] is True  # relayed addresses are the node's own


def test_the_image_runs_trelay_serve_with_the_mounted_settings() -> None:
    text = DOCKERFILE.read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    command = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert entrypoint == ["trelay"]
    arguments = build_parser().parse_args(command)
    assert arguments.command == "serve"
    config_map_file = Path(mount("config")) / next(iter(documents()["ConfigMap"]["data"]))
    assert arguments.config == config_map_file
    # The manifest's args replace the image's CMD and keep the same settings file.
    assert container()["args"][:3] == command
    user = re.search(r"^USER (\d+)", text, re.M)
    assert user is not None and int(user.group(1)) == container()["securityContext"]["runAsUser"]
