"""Test-session settings shared by every test module."""

from __future__ import annotations

import os
from collections.abc import Generator

import pluggy
import pytest
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


# --------------------------------------------------------------------------- no silent skips
#
# A skipped test checks nothing. The dev dependencies (torchdiffeq, matplotlib, tqdm, ...)
# are installed for the tests, so a missing one must fail loudly: an importorskip of
# torchdiffeq once hid 50+ tests. The only allowed skip is a test that needs CUDA.

ALLOWED_SKIP = "cuda"  # a skip reason must mention it (case-insensitive)


def _fail_disallowed_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    if ALLOWED_SKIP not in reason.lower():
        report.outcome = "failed"
        report.longrepr = (
            f"skipped ({reason}), but the only allowed skip is a test that needs CUDA: "
            "a missing dev dependency is an error (pip install -e .[dev])"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pluggy.Result[pytest.CollectReport], None]:
    outcome = yield
    _fail_disallowed_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    outcome = yield
    _fail_disallowed_skip(outcome.get_result())
