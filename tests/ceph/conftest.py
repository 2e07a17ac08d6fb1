"""Fixtures for tests against a real Ceph object store (RADOS Gateway).

``ceph`` (session) is a :class:`~idigdask.testing.ceph.CephGateway`: from the
environment when ``IDIGDASK_S3_ENDPOINT`` and the AWS keys are set, else from a cluster
that ``ci/ceph.sh`` already runs, else one this session starts with ``ci/ceph.sh start``
(and stops at the end). When no gateway can be had the tests are skipped, except under
``CI=true``, where they fail: CI must never pass by skipping.

``bucket`` and ``public_bucket`` give a fresh, empty bucket per test and delete it (and
its objects) afterwards; ``s3`` is an ``s3fs.S3FileSystem`` on the gateway.

Every test in this folder carries the ``ceph`` marker.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from idigdask.testing.ceph import (
    CephGateway,
    CephScriptError,
    parse_exports,
    run_ceph_script,
)

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test collected from this folder with ``pytest.mark.ceph``."""
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.ceph)


def in_ci() -> bool:
    """True when running under CI (``CI=true``), where skipping is not allowed."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def unavailable(reason: str) -> None:
    """Skip the test for want of a gateway, or fail it under CI."""
    if in_ci():
        pytest.fail(f"Ceph gateway unavailable under CI=true: {reason}", pytrace=False)
    pytest.skip(f"Ceph gateway unavailable: {reason}")


def answers(endpoint: str) -> str | None:
    """Return None when the S3 endpoint answers an HTTP request, else why not."""
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=10):
            return None
    except urllib.error.HTTPError:
        return None  # an S3 error document still means the gateway is up
    except OSError as exc:
        return f"{endpoint} does not answer: {exc}"


@pytest.fixture(scope="session")
def ceph() -> Iterator[CephGateway]:
    """A running Ceph RADOS Gateway with a test user (see the module docstring)."""
    gateway = CephGateway.from_env()
    started = False
    if gateway is None:
        try:
            gateway = CephGateway.from_env(parse_exports(run_ceph_script("env")))
        except CephScriptError:
            try:
                gateway = CephGateway.from_env(parse_exports(run_ceph_script("start")))
            except CephScriptError as exc:
                unavailable(str(exc))
            started = True
        if gateway is None:
            unavailable("ci/ceph.sh printed no IDIGDASK_S3_ENDPOINT and AWS keys")
    problem = answers(gateway.endpoint)
    if problem:
        unavailable(problem)
    yield gateway
    if started:
        run_ceph_script("stop", gateway.state_dir)


def _fresh_bucket(ceph: CephGateway, public_read: bool) -> Iterator[str]:
    name = ceph.make_bucket(f"test-{uuid.uuid4().hex[:16]}", public_read=public_read)
    yield name
    ceph.remove_bucket(name)


@pytest.fixture
def bucket(ceph: CephGateway) -> Iterator[str]:
    """A new empty private bucket's name; the bucket and its objects go afterwards."""
    yield from _fresh_bucket(ceph, public_read=False)


@pytest.fixture
def public_bucket(ceph: CephGateway) -> Iterator[str]:
    """Like ``bucket``, but anyone may GET its objects at ``ceph.public_url(...)``."""
    yield from _fresh_bucket(ceph, public_read=True)


@pytest.fixture
def s3(ceph: CephGateway):
    """A fresh ``s3fs.S3FileSystem`` on the gateway (nothing shared between tests)."""
    return ceph.filesystem()
