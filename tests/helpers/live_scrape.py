"""The metric names a running `trelay serve` really serves: one scrape of its /metrics.

The process runs with a relay port range (so the port-pool gauge exists) and in a fleet
whose Redis does not answer (a closed loopback port: the fleet's metrics are served,
`trelay_fleet_connected` 0, and the node is ready all the same), and is stopped with
SIGTERM after the scrape; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from functools import cache
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

TIMEOUT = 30.0
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


@cache
def scraped_metrics() -> tuple[frozenset[str], frozenset[str]]:
    """(every metric name, with histograms by family name; the histogram families)."""
    text = _scrape_once()
    names: set[str] = set()
    histograms: set[str] = set()
    # By family, not by sample: a labelled counter nobody has bumped yet has no sample,
    # but it is served (HELP and TYPE) and queries may name it.
    for family in text_string_to_metric_families(text):
        if family.type == "histogram":
            histograms.add(family.name)
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return frozenset(names), frozenset(histograms)


def _closed_port() -> int:
    """A loopback TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _scrape_once() -> str:
    trelay = Path(sys.executable).with_name("trelay")
    command = [str(trelay), "serve", "--relay-ports", "50000-50100", "--allow-loopback-peers"]
    command += ["--redis-url", f"redis://127.0.0.1:{_closed_port()}/0"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], TIMEOUT)
        assert ready, "no ready line from trelay serve"
        event = json.loads(process.stdout.readline())
        http = event["http"][0]
        deadline = time.monotonic() + TIMEOUT
        with urllib.request.urlopen(f"http://{http}/metrics", timeout=TIMEOUT) as response:
            text: str = response.read().decode()
        assert time.monotonic() < deadline
        return text
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(TIMEOUT)
