"""Shared test setup: root-only tests are skipped without root; every emulation test must leave a clean machine."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TESTBED_LOCK_WAIT", "600")  # queue behind another emulation instead of failing


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "stock_kernel: needs what distribution kernels have and this host may not (netem, Open "
        "vSwitch); skips here with the reason, runs in the stock-kernel VM lane: sudo bash scripts/vmtest.sh")


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: builds real Mininet networks (run the suite with sudo)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def clean_machine():
    """Asserts the test left no namespaces' processes, links, cgroups or run records behind."""
    from testbed.emulation.cleanup import leftovers

    yield
    left = leftovers()
    assert not any(left.values()), f"emulation leftovers: {left}"
