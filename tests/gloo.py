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


def finish(procs: list[subprocess.Popen[str]], timeout: float) -> list[str]:
    """The stderr of every process, each of which must exit 0; kills all past ``timeout``."""
    deadline = time.monotonic() + timeout
    errors = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            _, err = p.communicate()
            raise AssertionError(f"worker did not finish within {timeout} s:\n{err}") from None
        assert p.returncode == 0, err
        errors.append(err)
    return errors
