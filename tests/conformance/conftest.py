"""Fixtures the conformance tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from providers.http import new_session


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """The worker's upstream session, as the adapters get it."""
    async with new_session() as client:
        yield client
