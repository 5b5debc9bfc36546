"""Test-session settings shared by every test module."""

from __future__ import annotations

import os

import torch


def _share_cores_between_xdist_workers() -> None:
    """Give each pytest-xdist worker its share of the cores for intra-op threads.

    Two workers with two OpenMP threads each on two cores make small ops spin-wait (steps
    measured up to ~100x slower), which mostly slows down the compile and example tests.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    share = max(1, (os.cpu_count() or 1) // workers)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), share)))


_share_cores_between_xdist_workers()
