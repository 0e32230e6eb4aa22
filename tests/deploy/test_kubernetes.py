"""deploy/kubernetes/trelay.yaml agrees with trelay itself and with Kubernetes' schemas: the
objects validate offline (kubernetes-validate's OpenAPI schemas, unknown fields refused),
the ConfigMap's settings and the container's arguments load, the operator port listens on
the pod IP (never 0.0.0.0 on the host network), the probes and the Prometheus annotation
name what trelay serves, the grace period covers the drain, and the preStop hook drains
trelay and waits for it, run for real in a PID namespace where trelay is PID 1 as in the
container. (No cluster runs here: the kubelet's own part is not exercised.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.kube_manifests import (
    NODE_IP,
    by_kind,
    kubernetes_versions,
    mounted_settings,
    only_container,
    validate,
)
from trelay.ops.http_app import NodeStatus, build_app
from trelay.process.cli import build_parser

ROOT = Path(__file__).parents[2]
MANIFEST = ROOT / "deploy" / "kubernetes" / "trelay.yaml"
DRAIN_TIMEOUT = 3600.0  # `[drain] timeout`'s default; the manifest passes it explicitly
TIMEOUT = 60


def documents() -> dict[str, dict[str, Any]]:
    return by_kind(yaml.safe_load_all(MANIFEST.read_text()))


def container() -> dict[str, Any]:
    return only_container(documents()["DaemonSet"])


@pytest.mark.parametrize("version", kubernetes_versions())
def test_the_objects_validate_against_the_kubernetes_schemas(version: str) -> None:
    for item in documents().values():
        validate(item, version)


def test_the_config_map_and_the_command_make_valid_settings(tmp_path: Path) -> None:
    docs = documents()
    settings = mounted_settings(docs, tmp_path)
    assert settings.relay.address == NODE_IP  # status.hostIP
    assert settings.auth.shared_secrets == ("replace-with-a-long-random-secret",)
    ports = {(p["containerPort"], p["protocol"]) for p in container()["ports"]}
    assert {(a.port, "UDP") for a in settings.listen.udp} <= ports
    assert {(a.port, "TCP") for a in settings.listen.tcp} <= ports
    # The operator port on the pod IP only: 0.0.0.0 on the host network is every address
    # of the node, its public one included.
    [http] = settings.http.listen
    assert http.host == NODE_IP
    assert (http.port, "TCP") in ports
    annotations = docs["DaemonSet"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(http.port)
    for probe in ("readinessProbe", "livenessProbe"):
        assert container()[probe]["httpGet"]["port"] == http.port
        assert "host" not in container()[probe]["httpGet"]  # the pod IP, where it listens
    pod_ip = {e["name"]: e for e in container()["env"]}["POD_IP"]
    assert pod_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_the_probes_ask_endpoints_trelay_serves() -> None:
    paths = {route.path for route in build_app(NodeStatus()).routes}  # type: ignore[attr-defined]
    assert container()["readinessProbe"]["httpGet"]["path"] == "/readyz" in paths
    assert container()["livenessProbe"]["httpGet"]["path"] == "/healthz" in paths


def test_the_grace_period_covers_the_drain(tmp_path: Path) -> None:
    spec = documents()["DaemonSet"]["spec"]["template"]["spec"]
    args = container()["args"]
    drain = float(args[args.index("--drain-timeout") + 1])
    assert drain == DRAIN_TIMEOUT
    assert spec["terminationGracePeriodSeconds"] == drain + 60
    assert spec["hostNetwork"] is True  # relayed addresses are the node's own
    settings = mounted_settings(documents(), tmp_path)
    assert settings.drain.timeout == drain


def test_the_image_is_the_readme_tag_and_runs_the_mounted_settings() -> None:
    assert container()["image"] == "trelay:0.1.0"
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    command = json.loads(next(line for line in dockerfile.splitlines()
                              if line.startswith("CMD "))[4:])  # fmt: skip
    # The manifest's args replace the image's CMD and keep the same settings file.
    assert container()["args"][:3] == command
    config = build_parser().parse_args(command).config
    mount = next(m for m in container()["volumeMounts"] if m["name"] == "config")
    assert config == Path(mount["mountPath"]) / next(iter(documents()["ConfigMap"]["data"]))
    security = container()["securityContext"]
    assert "USER 65534:65534" in dockerfile and security["runAsUser"] == 65534
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["capabilities"] == {"drop": ["ALL"]}


def pre_stop_command() -> list[str]:
    return list(container()["lifecycle"]["preStop"]["exec"]["command"])


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def test_the_pre_stop_hook_drains_trelay_and_waits_for_it_to_exit(tmp_path: Path) -> None:
    """trelay as PID 1 of a new PID namespace, as in the container (exec-form ENTRYPOINT);
    the hook, run in that namespace, must start the drain with SIGTERM and end only when
    trelay has ended (status 0): the kubelet's own SIGTERM comes after the hook."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("a PID namespace needs root and util-linux's unshare and nsenter")
    trelay = Path(sys.executable).with_name("trelay")
    with (tmp_path / "stderr").open("w+") as stderr:
        # unshare forks and its child execs trelay: PID 1 there; unshare exits with its status.
        serve = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
             trelay, "serve", "--listen-udp", "127.0.0.1:0", "--listen-http", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert serve.stdout is not None
            line = serve.stdout.readline()
            assert json.loads(line)["event"] == "ready", (line, stderr.read())
            [pid_1] = children(serve.pid)  # trelay, as the host sees it
            hook = subprocess.run(
                ["nsenter", f"--target={pid_1}", "--pid", "--", *pre_stop_command()],
                capture_output=True, text=True, timeout=TIMEOUT, check=False,
            )  # fmt: skip
            # When PID 1 ends, the kernel kills the rest of its namespace, the hook's wait
            # loop included (in a pod the kubelet sees the hook end with the container).
            assert hook.returncode in (0, -signal.SIGKILL), hook
            started = time.monotonic()
            status = serve.wait(timeout=TIMEOUT)
            assert time.monotonic() - started < 1.0  # trelay had ended when the hook did
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait()
        stderr.seek(0)
        log = stderr.read()
    assert status == 0, log
    assert "SIGTERM received" in log and "Traceback" not in log
