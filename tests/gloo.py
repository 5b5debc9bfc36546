"""Launching a test file as a pair of gloo worker processes (importable from test modules:
pytest puts tests/ on sys.path).

The workers get torchrun's environment variables set by hand (127.0.0.1 only, a free
port), one intra-op thread each, and the repository on ``PYTHONPATH`` whatever the
install.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env(**extra: str) -> dict[str, str]:
    """This environment, with the repository importable and one intra-op thread."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def launch(script: pathlib.Path, *args: str, world: int = 2) -> list[subprocess.Popen[str]]:
    """``python script *args`` as ranks ``0 .. world - 1`` of one process group."""
    port = free_port()
    procs = []
    for r in range(world):
        rank_env = env(
            RANK=str(r),
            LOCAL_RANK=str(r),
            WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), *args],
                env=rank_env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def stop(procs: list[subprocess.Popen[str]]) -> None:
    """Kill every process still running, then reap them all (wait, close their pipes).

    Call it in a ``finally``: no rank may outlive its test, whatever happened (a leaked
    rank's ResourceWarning once failed an unrelated test).
    """
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.communicate()  # after a kill: reaps it; after an earlier communicate: a no-op


def wait(procs: list[subprocess.Popen[str]], rank: int, timeout: float) -> str:
    """The stderr of ``procs[rank]`` once it exits; past ``timeout`` seconds every rank is
    stopped and ``AssertionError`` raised (the harness bound, not a measured duration)."""
    try:
        return procs[rank].communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        stop(procs)
        err = procs[rank].communicate()[1]
        raise AssertionError(f"rank {rank} did not exit within {timeout:.3g} s:\n{err}") from None


def finish(procs: list[subprocess.Popen[str]], timeout: float) -> list[str]:
    """The stderr of every process, each of which must exit 0 within ``timeout`` seconds in
    all; otherwise every rank is stopped and ``AssertionError`` raised."""
    deadline = time.monotonic() + timeout
    errors = []
    try:
        for rank, p in enumerate(procs):
            err = wait(procs, rank, max(0.1, deadline - time.monotonic()))
            assert p.returncode == 0, f"rank {rank} exited with {p.returncode}:\n{err}"
            errors.append(err)
    finally:
        stop(procs)
    return errors
