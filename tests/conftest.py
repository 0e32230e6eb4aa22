"""Plugins and fixtures for the whole suite: pytester, for running the trelay pytest plugin
as a user would (tests/shim; the plugin itself loads through its `pytest11` entry point),
and `redis_server`, a real redis-server per test (`tests.helpers.redis_server`) for every
test of the fleet, wherever it lives."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.redis_server import RedisServer, running_redis

pytest_plugins = ["pytester"]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path) as server:
        yield server
