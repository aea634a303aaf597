"""The chart rendered once per session with its default values and with the production-like ones."""

from __future__ import annotations

import pytest

from tests.helm.chart import Rendered, production_values, render


@pytest.fixture(scope="session")
def default_release() -> Rendered:
    return render()


@pytest.fixture(scope="session")
def production_release() -> Rendered:
    return render(production_values())
