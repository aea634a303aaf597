"""Fixtures of the unit tests that need a live upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from providers.simulator import start_simulator


@pytest.fixture
async def sim() -> AsyncIterator[str]:
    """A simulator on a loopback port, with default options: its base URL."""
    simulator = await start_simulator()
    yield simulator.url
    await simulator.close()
