"""lux_torch.distributed: collectives, DistributedOptimizer and failure handling, on 2 CPU
processes (gloo, 127.0.0.1 only).

The multi-process tests run this file as a script (``python test_distributed.py MODE OUT``)
in two subprocesses with torchrun's environment variables set by hand; the workers save
what they measured with ``torch.save`` and the tests compare it here. One pair of workers
runs every training and collective check (eager, donated and compiled steps) and ends with
a stalled rank, to pay the start-up (importing torch, compiling) once; one test function
checks it all, so that pytest-xdist never starts the pair twice.
"""

from __future__ import annotations

import math
import pathlib
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

import pytest
import torch
from gloo import ROOT, env, finish, launch, stop, wait
from helpers import assert_png
from torch.utils.data.distributed import DistributedSampler

import lux_torch as lux
from lux_torch import distributed as ldist

HERE = pathlib.Path(__file__).resolve()
STEPS = 20
BATCH = 32
LR = 1e-2
TRAIN_BUCKET = 128  # bytes: the 97-parameter model's 388 bytes of gradients in 4 buckets


# ------------------------------------------------------------------------ shared setup


def _model() -> lux.Layer:
    return lux.Chain(lux.Linear(4, 16, activation=torch.tanh), lux.Linear(16, 1))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    kx, kn = lux.random.split(lux.random.key(1))
    x = lux.random.normal(kx, (BATCH, 4))
    y = torch.sin(x.sum(1, keepdim=True)) + 0.1 * lux.random.normal(kn, (BATCH, 1))
    return x, y


def _bucket_tree(r: int) -> dict[str, torch.Tensor]:
    """Float32 leaves of 1412 elements (5648 bytes) whose values depend on the rank."""
    base = torch.arange(1412, dtype=torch.float32) / 100
    return {"a": base[:1000] + r, "b": (base[1000:1407] * (r + 1)).reshape(37, 11), "c": base[-5:]}


# ---------------------------------------------------------------------------- workers


def _count_all_reduce() -> list[int]:
    """Count ``torch.distributed.all_reduce`` calls (test-only wrapper, child process)."""
    calls = [0]
    original = torch.distributed.all_reduce

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    torch.distributed.all_reduce = counting
    return calls


def _train(ts: lux.TrainState, xy: tuple[torch.Tensor, torch.Tensor], **kw: Any) -> lux.TrainState:
    loss_fn = lux.losses.MSELoss()
    for _ in range(STEPS):
        ts, _, _ = lux.train_step(loss_fn, xy, ts, **kw)
    return ts


def _worker_train(out: pathlib.Path) -> None:
    ldist.initialize(timeout=timedelta(seconds=60))
    ldist.initialize()  # idempotent
    r, w = ldist.rank(), ldist.world_size()
    calls = _count_all_reduce()
    res: dict[str, Any] = {"rank": r, "world": w}

    # bucketed collectives
    tree = _bucket_tree(r)
    before = {k: v.clone() for k, v in tree.items()}
    calls[0] = 0
    res["mean"] = ldist.all_reduce(tree, bucket_bytes=1024)
    res["mean_calls"] = calls[0]
    calls[0] = 0
    res["mean_default_bucket"] = ldist.all_reduce(tree)
    res["default_calls"] = calls[0]
    res["unmodified"] = all(torch.equal(tree[k], before[k]) for k in tree)
    for op in ("sum", "max", "min"):
        res[op] = ldist.all_reduce(tree, op, bucket_bytes=1024)
    mixed = {"f": torch.full((3,), float(r)), "i": torch.tensor([r, 10 * r]), "d": torch.ones(2)}
    mixed["d"] = mixed["d"].double() * (r + 1)
    res["mixed_sum"] = ldist.all_reduce(mixed, "sum", bucket_bytes=8)
    res["broadcast"] = ldist.broadcast(_bucket_tree(r), src=1, bucket_bytes=1024)

    # synchronize: different initial parameters on each rank, rank 0's afterwards
    ps, st = lux.setup(lux.random.key(100 + r), _model())
    res["sync"] = ldist.synchronize(ps, st)

    # training on this rank's half of the batch
    x, y = _data()
    local = ldist.shard((x, y))
    ps, st = lux.setup(lux.random.key(0), _model())
    opt = ldist.DistributedOptimizer(lux.optim.adam(LR), bucket_bytes=TRAIN_BUCKET)
    calls[0] = 0
    res["eager"] = _train(lux.TrainState(_model(), ps, st, opt), local).params
    res["train_calls"] = calls[0]
    donated = lux.tree.map(torch.clone, ps)  # donate=True overwrites the given buffers
    res["donate"] = _train(lux.TrainState(_model(), donated, st, opt), local, donate=True).params
    sgd = ldist.DistributedOptimizer(lux.optim.sgd(LR, momentum=0.9))
    res["sgd"] = _train(lux.TrainState(_model(), ps, st, sgd), local).params
    compiled = lux.TrainState(_model(), ps, st, opt)
    res["compiled"] = _train(compiled, local, compile=True).params

    # a NaN in rank 1's batch: every rank raises in that step and none updates, so ranks
    # that catch it and go on stay identical (train_step checks the averaged gradients)
    for compile in (False, True):
        ts = lux.TrainState(_model(), ps, st, opt)
        raised = []
        for step in range(4):
            xs, ys = local
            if r == 1 and step == 2:
                xs = xs.clone()
                xs[0, 0] = float("nan")
            try:
                ts, _, _ = lux.train_step(lux.losses.MSELoss(), (xs, ys), ts, compile=compile)
            except FloatingPointError:
                raised.append(step)
        res[f"nan_compile={compile}"] = (raised, ts.step, ts.params)
    torch.save(res, out / f"rank{r}.pt")

    # finally, rank 1 stays alive but stops calling collectives (until the test kills it):
    # rank 0 must fail on the timeout of its group (5 s) and exit non-zero
    short = torch.distributed.new_group(timeout=timedelta(seconds=5))
    stalling = ldist.DistributedOptimizer(lux.optim.adam(LR), group=short)
    ts = lux.TrainState(_model(), ps, st, stalling)
    for step in range(10_000):
        if r == 1 and step == 3:
            time.sleep(3600)
        ts, _, _ = lux.train_step(lux.losses.MSELoss(), local, ts)


def _worker_fail(out: pathlib.Path) -> None:
    ldist.initialize(timeout=timedelta(seconds=5))
    x, y = _data()
    local = ldist.shard((x, y))
    ps, st = lux.setup(lux.random.key(0), _model())
    ts = lux.TrainState(_model(), ps, st, ldist.DistributedOptimizer(lux.optim.adam(LR)))
    loss_fn = lux.losses.MSELoss()
    for step in range(10_000):
        if ldist.rank() == 1 and step == 3:
            raise RuntimeError("rank 1 fails on purpose")
        ts, _, _ = lux.train_step(loss_fn, local, ts)


# ------------------------------------------------------------------------------ tests


def _train_on_two_ranks(out: pathlib.Path) -> list[dict[str, Any]]:
    """Run the ``train`` workers; return what they saved. Checks the final stall: rank 0
    exits non-zero with a clear error (within the harness's bound) while rank 1, stalled
    for an hour, is still alive: the collective's timeout ended rank 0, not rank 1's exit."""
    procs = launch(HERE, "train", str(out))
    try:
        err0 = wait(procs, 0, timeout=240)
        rank_1_stalled = procs[1].poll() is None
    finally:
        stop(procs)
    err1 = procs[1].communicate()[1]
    assert (out / "rank0.pt").exists(), err0
    assert (out / "rank1.pt").exists(), err1
    assert procs[0].returncode != 0
    assert "lux_torch.distributed.all_reduce: the collective failed on rank 0 of 2" in err0, err0
    assert rank_1_stalled, err1
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def _single_process(opt: lux.optim.GradientTransformation) -> Any:
    ps, st = lux.setup(lux.random.key(0), _model())
    return _train(lux.TrainState(_model(), ps, st, opt), _data()).params


def _assert_close(a: Any, b: Any, rtol: float, what: str) -> None:
    for (path, u), v in zip(lux.tree.flatten_with_paths(a), lux.tree.leaves(b), strict=True):
        torch.testing.assert_close(u, v, rtol=rtol, atol=1e-7, msg=f"{what} {path} differs")


def _assert_identical(a: Any, b: Any) -> None:
    assert all(
        torch.equal(u, v) for u, v in zip(lux.tree.leaves(a), lux.tree.leaves(b), strict=True)
    )


def _check_training(trained: list[dict[str, Any]]) -> None:
    assert [r["world"] for r in trained] == [2, 2]
    initial, _ = lux.setup(lux.random.key(0), _model())
    references = {"adam": lux.optim.adam(LR), "sgd": lux.optim.sgd(LR, momentum=0.9)}
    for path, opt in (("eager", "adam"), ("donate", "adam"), ("compiled", "adam"), ("sgd", "sgd")):
        _assert_identical(trained[0][path], trained[1][path])
        # half a batch per rank, gradients averaged == the full batch in one process
        _assert_close(trained[0][path], _single_process(references[opt]), rtol=1e-5, what=path)
        assert not lux.tree.allclose(trained[0][path], initial, rtol=1e-3), path  # it trained


def _check_nan_on_one_rank(trained: list[dict[str, Any]]) -> None:
    for compile in (False, True):
        (raised0, step0, ps0), (raised1, step1, ps1) = (
            res[f"nan_compile={compile}"] for res in trained
        )
        assert raised0 == raised1 == [2], compile
        assert step0 == step1 == 3
        _assert_identical(ps0, ps1)


def _check_buckets(trained: list[dict[str, Any]]) -> None:
    nbytes = 1412 * 4
    for res in trained:
        assert res["mean_calls"] <= math.ceil(nbytes / 1024)
        assert res["mean_calls"] == 6  # several buckets: a leaf straddles two of them
        assert res["default_calls"] == 1  # 25 MB: one call for the whole tree
        # 97 float32 gradients = 388 bytes in buckets of 128 bytes, at every step
        assert res["train_calls"] <= STEPS * math.ceil(97 * 4 / TRAIN_BUCKET)
        assert res["train_calls"] == STEPS * 4


def _check_collectives(trained: list[dict[str, Any]]) -> None:
    t0, t1 = _bucket_tree(0), _bucket_tree(1)
    ps0, st0 = lux.setup(lux.random.key(100), _model())
    for res in trained:
        assert res["unmodified"]
        for k in t0:
            torch.testing.assert_close(res["mean"][k], (t0[k] + t1[k]) / 2)
            assert torch.equal(res["mean_default_bucket"][k], res["mean"][k])
            torch.testing.assert_close(res["sum"][k], t0[k] + t1[k])
            assert torch.equal(res["max"][k], torch.maximum(t0[k], t1[k]))
            assert torch.equal(res["min"][k], torch.minimum(t0[k], t1[k]))
            assert torch.equal(res["broadcast"][k], t1[k])
            assert res["mean"][k].shape == t0[k].shape
        mixed = res["mixed_sum"]
        assert torch.equal(mixed["f"], torch.ones(3))
        assert torch.equal(mixed["i"], torch.tensor([1, 10]))
        assert mixed["d"].dtype == torch.float64 and torch.equal(mixed["d"], torch.full((2,), 3.0))
        ps, st = res["sync"]  # synchronize: rank 0's parameters everywhere
        _assert_identical(ps, ps0)
        assert lux.tree.structure(st) == lux.tree.structure(st0)


def test_two_ranks(tmp_path: pathlib.Path) -> None:
    """Two gloo ranks: training (eager, donate, compiled, SGD) equals one process on the
    full batch, bucket counts, collective ops, synchronize, and a stalled rank."""
    trained = _train_on_two_ranks(tmp_path)
    _check_training(trained)
    _check_buckets(trained)
    _check_nan_on_one_rank(trained)
    _check_collectives(trained)


def test_failing_rank_makes_the_other_exit(tmp_path: pathlib.Path) -> None:
    # rank 0 exits, non-zero and naming the failed collective, within the harness's bound
    procs = launch(HERE, "fail", str(tmp_path))
    try:
        err = wait(procs, 0, timeout=60)
    finally:
        stop(procs)
    err1 = procs[1].communicate()[1]
    assert "rank 1 fails on purpose" in err1, err1
    assert procs[0].returncode != 0
    assert "lux_torch.distributed.all_reduce: the collective failed on rank 0 of 2" in err, err


def test_example_runs_under_torchrun(tmp_path: pathlib.Path) -> None:
    png = tmp_path / "distributed_train.png"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [str(ROOT / "examples" / "distributed_train.py"), "--epochs", "3", "--quick"]
    cmd += ["--out", str(png)]
    done = subprocess.run(cmd, env=env(), cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.count("epoch") == 3, out  # printed by rank 0 only
    assert "parameters identical on all 2 ranks: True" in out, out
    losses = [
        float(line.split("loss")[1].split()[0]) for line in out.splitlines() if "epoch" in line
    ]
    assert losses[-1] < losses[0], losses
    assert_png(png)  # written by rank 0


# ----------------------------------------------------------------- single-process API


def test_single_process_defaults_and_identity() -> None:
    assert not ldist.is_initialized()
    assert (ldist.rank(), ldist.world_size(), ldist.local_rank()) == (0, 1, 0)
    tree = {"w": torch.ones(3)}
    assert ldist.all_reduce(tree) is tree
    assert ldist.broadcast(tree) is tree
    ps: dict[str, torch.Tensor] = {"w": torch.ones(1)}
    st: dict[str, torch.Tensor] = {}
    assert ldist.synchronize(ps, st) == (ps, st)
    assert ldist.shard(tree) is tree


def test_initialize_without_torchrun_env_is_single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    ldist.initialize()
    assert not ldist.is_initialized() and ldist.world_size() == 1


def test_initialize_with_partial_env_names_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match=r"\['MASTER_ADDR', 'MASTER_PORT'\].*torchrun"):
        ldist.initialize()
    assert not ldist.is_initialized()


def test_distributed_optimizer_single_process_equals_inner() -> None:
    ps, st = lux.setup(lux.random.key(0), _model())
    for inner in (lux.optim.adam(LR), lux.optim.sgd(LR, momentum=0.9)):
        a = _train(lux.TrainState(_model(), ps, st, inner), _data()).params
        wrapped = ldist.DistributedOptimizer(inner)
        b = _train(lux.TrainState(_model(), ps, st, wrapped), _data()).params
        _assert_identical(a, b)


def test_argument_errors() -> None:
    with pytest.raises(TypeError, match="DistributedOptimizer: optimizer must be"):
        ldist.DistributedOptimizer(torch.optim.Adam)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bucket_bytes must be a positive int"):
        ldist.DistributedOptimizer(lux.optim.adam(), bucket_bytes=0)
    with pytest.raises(ValueError, match="op must be one of"):
        ldist.all_reduce({"w": torch.ones(1)}, "avg")
    with pytest.raises(ValueError, match="n must be >= 0"):
        ldist.shard_indices(-1)


def test_shard_indices_match_distributed_sampler() -> None:
    for shuffle in (False, True):
        idx = ldist.shard_indices(10, shuffle=shuffle, seed=3, epoch=2)
        data: Any = list(range(10))
        s: DistributedSampler[int] = DistributedSampler(
            data, num_replicas=1, rank=0, shuffle=shuffle, seed=3
        )
        s.set_epoch(2)
        assert idx.tolist() == list(s)
        assert sorted(idx.tolist()) == list(range(10))
    first = ldist.shard_indices(10, shuffle=True, epoch=0)
    assert not torch.equal(first, ldist.shard_indices(10, shuffle=True, epoch=1))
    assert torch.equal(first, ldist.shard_indices(10, shuffle=True, epoch=0))
    sampler = ldist.sampler(list(range(7)), shuffle=False)
    assert (sampler.num_replicas, sampler.rank, list(sampler)) == (1, 0, list(range(7)))


# ------------------------------------------------------------------ the gloo launcher

SLEEPER = """
import os, sys, time
if os.environ["RANK"] == sys.argv[1]:
    sys.exit("rank " + sys.argv[1] + " fails at once")
time.sleep(600)
"""


def _reaped(procs: list[subprocess.Popen[str]]) -> bool:
    """Every process has exited and been waited for, and its pipes are closed."""
    return all(p.returncode is not None and p.stdout is not None and p.stdout.closed for p in procs)


@pytest.mark.parametrize(
    ("failing", "timeout", "error"),
    [
        ("none", 0.5, r"rank 0 did not exit within 0.5 s"),
        ("0", 120, r"(?s)rank 0 exited with 1:.*rank 0 fails at once"),
    ],
    ids=["timeout", "one-rank-fails"],
)
def test_launcher_stops_every_rank(
    tmp_path: pathlib.Path, failing: str, timeout: float, error: str
) -> None:
    # on a timeout, or when one rank fails, no rank may outlive its test: a leaked one's
    # ResourceWarning failed an unrelated test
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    procs = launch(script, failing)
    with pytest.raises(AssertionError, match=error):
        finish(procs, timeout=timeout)
    assert _reaped(procs)


if __name__ == "__main__":
    _mode, _out = sys.argv[1], pathlib.Path(sys.argv[2])
    torch.set_num_threads(1)
    if _mode == "train":
        _worker_train(_out)
    else:
        _worker_fail(_out)
