"""Run a trio nursery on a background thread (moved to `relay.testing.trio_in_thread`).

Kept so that existing imports keep working; see `relay.testing` for the behaviour.
"""

from __future__ import annotations

from relay.testing import STARTUP_TIMEOUT as TIMEOUT
from relay.testing import trio_in_thread

__all__ = ["TIMEOUT", "trio_in_thread"]
