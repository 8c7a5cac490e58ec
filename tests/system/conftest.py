"""Fixtures of the system tests."""

from collections.abc import Iterator

import pytest

from tests.processes import Cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A PostgreSQL cluster of the module's own (tests/processes.py), removed after its last test."""
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()
