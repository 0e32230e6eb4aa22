"""Kubernetes objects (the plain manifest's or the Helm chart's) read as trelay would run
them: the container's arguments with the downward-API variables filled in, over the
ConfigMap's settings and the Secret's files laid out where the pod mounts them.

Shared by tests/deploy/test_kubernetes.py and tests/deploy/test_helm_chart.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # no type hints shipped

from trelay.config.settings import Settings, load_settings
from trelay.process.cli import build_parser, flags_from

Object = dict[str, Any]
# The oldest Kubernetes the deploy files are checked against, and the newest schemas the
# installed kubernetes-validate ships.
OLDEST_KUBERNETES = "1.29"
# Stand-ins for the downward API's values (status.podIP, status.hostIP): with host
# networking both are the node's InternalIP.
NODE_IP = "10.0.0.5"
NODE_NAME = "node-a.example"
DOWNWARD = {"status.podIP": NODE_IP, "status.hostIP": NODE_IP, "spec.nodeName": NODE_NAME}


def by_kind(objects: Iterable[Object]) -> dict[str, Object]:
    found: dict[str, Object] = {}
    for item in objects:
        assert item["kind"] not in found, f"two {item['kind']} objects"
        found[item["kind"]] = item
    return found


def only_container(daemon_set: Object) -> Object:
    [container] = daemon_set["spec"]["template"]["spec"]["containers"]
    return dict(container)


def environment(container: Object) -> dict[str, str]:
    """The container's environment as the kubelet sets it (downward API filled in)."""
    values = {}
    for variable in container.get("env", []):
        if "value" in variable:
            values[variable["name"]] = variable["value"]
        else:
            values[variable["name"]] = DOWNWARD[variable["valueFrom"]["fieldRef"]["fieldPath"]]
    return values


def expanded_args(container: Object) -> list[str]:
    """The arguments with `$(VAR)` replaced as the kubelet replaces them."""
    values = environment(container)
    return [re.sub(r"\$\((\w+)\)", lambda m: values[m[1]], str(a)) for a in container["args"]]


def mounted_settings(objects: Mapping[str, Object], root: Path) -> Settings:
    """The settings `trelay serve` gets in the pod, its mounts laid out under `root`."""
    daemon_set = objects["DaemonSet"]
    container = only_container(daemon_set)
    volumes = {v["name"]: v for v in daemon_set["spec"]["template"]["spec"]["volumes"]}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        files: Mapping[str, str] = {}
        if "configMap" in volume:
            assert volume["configMap"]["name"] == objects["ConfigMap"]["metadata"]["name"]
            files = objects["ConfigMap"]["data"]
        elif "secret" in volume:
            assert volume["secret"]["secretName"] == objects["Secret"]["metadata"]["name"]
            files = objects["Secret"]["stringData"]
        directory = root / mount["mountPath"].strip("/")
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (directory / name).write_text(text.replace("/etc/", f"{root}/etc/"))
    args = [a.replace("/etc/", f"{root}/etc/") for a in expanded_args(container)]
    arguments = build_parser().parse_args(args)
    assert arguments.command == "serve"
    return load_settings(arguments.config, flags_from(arguments))


def validate(item: Object, version: str) -> None:
    """Validate against that Kubernetes version's OpenAPI schemas, unknown fields refused."""
    kubernetes_validate.validate(item, version, strict=True)


def kubernetes_versions() -> list[str]:
    newest = ".".join(kubernetes_validate.latest_version().split(".")[:2])
    return [OLDEST_KUBERNETES, newest]
