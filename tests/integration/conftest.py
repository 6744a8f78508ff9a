"""Fixtures for tests on the provisioned lab (make provision)."""

import pytest

from tests.integration.labtools import Lab, load_lab


@pytest.fixture(scope="session")
def lab() -> Lab:
    return load_lab()
