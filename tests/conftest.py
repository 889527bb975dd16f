"""Fixtures for tests in several modules: the session's one Ray cluster (tests/raykit.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests import raykit

_shared = raykit.SharedCluster()
_users_left = 0  # tests of this session that ask for the cluster and have not run yet


@pytest.fixture(scope="session")
def _ray_session() -> Iterator[raykit.SharedCluster]:
    try:
        yield _shared
    finally:
        _shared.shutdown()


@pytest.fixture
def ray_cluster(_ray_session: raykit.SharedCluster) -> Iterator[Any]:
    """A Ray cluster of this machine: a head with no CPUs and raykit.WORKERS worker nodes of one
    CPU each, shared by the session; what a test adds or removes is undone after it."""
    cluster = _ray_session.get()
    with raykit.restored(cluster, put_back=_users_left > 1):  # else it is stopped after this test
        yield cluster


def _uses_cluster(item: pytest.Item) -> bool:
    return "ray_cluster" in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    global _users_left
    _users_left = sum(_uses_cluster(item) for item in items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """Stop the cluster after its last user rather than at the end of the session: idle, its
    raylets still take CPU from the tests that follow."""
    global _users_left
    try:
        return (yield)
    finally:
        if _uses_cluster(item):
            _users_left -= 1
            if _users_left <= 0:
                _shared.shutdown()
