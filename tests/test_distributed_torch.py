"""``lux.to_torch(model, ps, st)`` under ``DistributedDataParallel`` and FSDP2 ``fully_shard``,
on 2 CPU processes (gloo, 127.0.0.1 only).

As in ``test_distributed.py``, this file runs itself as a script (``python
test_distributed_torch.py OUT``) in two subprocesses with torchrun's environment variables
set by hand; one pair of workers runs every case (to pay the start-up once) and saves what
it measured with ``torch.save``; the test compares it here with one-process references.

- DDP, a Linear MLP: each rank builds different initial parameters (DDP broadcasts rank
  0's at construction) and trains ``torch.optim.Adam`` on its half of the batch; the
  parameters end identical across ranks and equal to ``to_torch`` trained on the full batch
  in one process, and ``module.lux_params()`` gives them back as a lux tree.
- DDP, Linear + BatchNorm1d + Linear: by default (``forward_sync_buffers=True``, called
  ``broadcast_buffers`` before torch 2.13) DDP copies rank 0's buffers (running statistics)
  into every rank before each forward; ``LuxModule.forward`` rebinds its buffers, which DDP
  supports (it re-reads ``module.named_buffers()`` at every sync). Checked against a
  one-process simulation of exactly these semantics.
- FSDP2 ``fully_shard`` on a 1-D CPU device mesh: the same MLP, its parameters sharded
  (``DTensor``), equal to one-process training after ``full_tensor()`` or ``unshard()``;
  with BatchNorm, buffers are neither sharded nor synchronised (each rank keeps its own).
"""

from __future__ import annotations

import pathlib
import sys
from datetime import timedelta
from typing import Any

import torch
import torch.nn.functional as F
from gloo import finish, launch

import lux_torch as lux
from lux_torch import distributed as ldist

HERE = pathlib.Path(__file__).resolve()
STEPS = 10
BATCH = 16
LR = 1e-2
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


# ------------------------------------------------------------------------ shared setup


def _mlp() -> lux.Layer:
    return lux.Chain(lux.Linear(4, 16, activation=torch.tanh), lux.Linear(16, 1))


def _bn() -> lux.Layer:
    # no bias before BatchNorm: its gradient is rounding noise, which Adam would amplify
    bn = lux.BatchNorm1d(8, activation=torch.tanh)
    return lux.Chain(lux.Linear(4, 8, bias=False), bn, lux.Linear(8, 1))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    kx, kn = lux.random.split(lux.random.key(1))
    x = lux.random.normal(kx, (BATCH, 4)) + 0.5  # a non-zero mean: running stats move
    y = torch.sin(x.sum(1, keepdim=True)) + 0.1 * lux.random.normal(kn, (BATCH, 1))
    return x, y


def _halves() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Rank ``r``'s half of the batch, as :func:`lux_torch.distributed.shard` gives it."""
    x, y = _data()
    h = BATCH // 2
    return [(x[:h], y[:h]), (x[h:], y[h:])]


def _train(module: torch.nn.Module, xy: tuple[torch.Tensor, torch.Tensor]) -> None:
    """``STEPS`` steps of ``torch.optim.Adam`` on the MSE loss, in place."""
    opt = torch.optim.Adam(module.parameters(), lr=LR)
    x, y = xy
    for _ in range(STEPS):
        opt.zero_grad()
        F.mse_loss(module(x), y).backward()
        opt.step()


# ----------------------------------------------------------------------------- worker


def _buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_buffers()}


def _worker(out: pathlib.Path) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard
    from torch.nn.parallel import DistributedDataParallel as DDP

    ldist.initialize(timeout=timedelta(seconds=60))
    r = ldist.rank()
    local = ldist.shard(_data())
    res: dict[str, Any] = {"rank": r, "world": ldist.world_size()}

    # DDP, Linear MLP: different initial parameters on each rank, rank 0's after DDP()
    module = lux.to_torch(_mlp(), *lux.setup(lux.random.key(r), _mlp()))
    ddp = DDP(module)
    res["ddp_synced_at_start"] = module.lux_params()
    _train(ddp, local)
    res["ddp"] = module.lux_params()

    # DDP, with BatchNorm: rank 0's buffers are broadcast before every forward
    module = lux.to_torch(_bn(), *lux.setup(lux.random.key(0), _bn()))
    ddp = DDP(module)  # forward_sync_buffers=True by default
    _train(ddp, local)
    res["ddp_bn"] = module.lux_params()
    res["ddp_bn_buffers"] = _buffers(module)  # this rank's: its last update was local
    res["ddp_bn_lux_state"] = module.lux_state()
    ddp.eval()
    with torch.no_grad():
        res["ddp_bn_eval"] = ddp(local[0])  # syncs the buffers first, then test mode
    res["ddp_bn_buffers_after_sync"] = _buffers(module)

    # FSDP2 fully_shard on a 1-D CPU mesh, Linear MLP
    mesh = init_device_mesh("cpu", (ldist.world_size(),))
    module = lux.to_torch(_mlp(), *lux.setup(lux.random.key(0), _mlp()))
    fully_shard(module, mesh=mesh)
    assert isinstance(module, FSDPModule)  # fully_shard changes the module's class
    _train(module, local)
    sharded = module.lux_params()  # DTensors, this rank's shard of every parameter
    res["fsdp_types"] = {type(t).__name__ for t in lux.tree.leaves(sharded)}
    res["fsdp_local_shapes"] = lux.tree.map(lambda t: tuple(t.to_local().shape), sharded)
    res["fsdp"] = lux.tree.map(lambda t: t.full_tensor(), sharded)
    module.unshard()  # all-gathers: the module holds plain full tensors until reshard()
    res["fsdp_unsharded"] = module.lux_params()
    module.reshard()

    # FSDP2 with BatchNorm: buffers are not sharded and not synchronised
    module = lux.to_torch(_bn(), *lux.setup(lux.random.key(0), _bn()))
    fully_shard(module, mesh=mesh)
    _train(module, local)
    res["fsdp_bn"] = lux.tree.map(lambda t: t.full_tensor(), module.lux_params())
    res["fsdp_bn_buffers"] = _buffers(module)

    torch.save(res, out / f"rank{r}.pt")
    ldist.shutdown()


# ------------------------------------------------------------------------------ tests


def _simulate(model: lux.Layer, sync_buffers: bool) -> tuple[Any, list[Any]]:
    """Two ranks in one process: the loss is the mean of the halves' losses (DDP and FSDP
    average gradients); before each step both halves see rank 0's state
    (``sync_buffers``, DDP's ``forward_sync_buffers``) or each keeps its own (FSDP2).

    Returns the trained parameters and each rank's state after the last step."""
    ps, st = lux.setup(lux.random.key(0), model)
    params = lux.tree.map(lambda t: t.clone().requires_grad_(), ps)
    opt = torch.optim.Adam(lux.tree.leaves(params), lr=LR)
    states = [st, st]
    for _ in range(STEPS):
        opt.zero_grad()
        if sync_buffers:
            states = [states[0], states[0]]
        losses, new = [], []
        for (x, y), s in zip(_halves(), states, strict=True):
            pred, s = model(x, params, s)
            losses.append(F.mse_loss(pred, y))
            new.append(s)
        ((losses[0] + losses[1]) / 2).backward()
        opt.step()
        states = new
    detach = lambda tree: lux.tree.map(lambda t: t.detach(), tree)  # noqa: E731
    return detach(params), [detach(s) for s in states]


def _assert_close(a: Any, b: Any, what: str, rtol: float = 1e-5) -> None:
    assert lux.tree.structure(a) == lux.tree.structure(b), what
    for (path, u), v in zip(lux.tree.flatten_with_paths(a), lux.tree.leaves(b), strict=True):
        torch.testing.assert_close(u, v, rtol=rtol, atol=1e-6, msg=f"{what}: {path} differs")


def _assert_identical(a: Any, b: Any, what: str) -> None:
    assert lux.tree.structure(a) == lux.tree.structure(b), what
    for (path, u), v in zip(lux.tree.flatten_with_paths(a), lux.tree.leaves(b), strict=True):
        assert type(u) is torch.Tensor and torch.equal(u, v), f"{what}: {path} differs"


def _check_mlp(res: list[dict[str, Any]]) -> None:
    ps0, st0 = lux.setup(lux.random.key(0), _mlp())
    single = lux.to_torch(_mlp(), ps0, st0)
    _train(single, _data())  # one process, the full batch
    reference = single.lux_params()
    assert not lux.tree.allclose(reference, ps0, rtol=1e-3)  # it trained
    for r in (0, 1):
        _assert_identical(res[r]["ddp_synced_at_start"], ps0, f"DDP() on rank {r}")
        lux.check_structure(_mlp(), res[r]["ddp"], st0)  # lux_params() is a lux ps tree
        _assert_close(res[r]["ddp"], reference, f"DDP rank {r}")
        assert res[r]["fsdp_types"] == {"DTensor"}
        _assert_close(res[r]["fsdp"], reference, f"FSDP2 rank {r}")
        _assert_identical(res[r]["fsdp_unsharded"], res[r]["fsdp"], f"FSDP2 unshard rank {r}")
    _assert_identical(res[0]["ddp"], res[1]["ddp"], "DDP ranks")
    _assert_identical(res[0]["fsdp"], res[1]["fsdp"], "FSDP2 ranks")
    # sharded along dim 0: rows 0-7 / 8-15 of the (16, 4) weight; the 1-row output layer
    # lives on rank 0, rank 1 holds an empty shard
    local = [res[r]["fsdp_local_shapes"] for r in (0, 1)]
    assert [s["layer_1"]["weight"] for s in local] == [(8, 4), (8, 4)]
    assert [s["layer_2"]["weight"] for s in local] == [(1, 16), (0, 16)]


def _check_ddp_batchnorm(res: list[dict[str, Any]]) -> None:
    params, states = _simulate(_bn(), sync_buffers=True)
    _assert_identical(res[0]["ddp_bn"], res[1]["ddp_bn"], "DDP BatchNorm ranks")
    for r in (0, 1):
        _assert_close(res[r]["ddp_bn"], params, f"DDP BatchNorm rank {r}")
        # after the last step, each rank's buffers hold rank 0's statistics updated with
        # its own half of the batch
        buffers = res[r]["ddp_bn_buffers"]
        for name in BUFFERS:
            torch.testing.assert_close(buffers[f"layer_2.{name}"], states[r]["layer_2"][name])
        st = res[r]["ddp_bn_lux_state"]
        _assert_close(st["layer_2"]["running_mean"], states[r]["layer_2"]["running_mean"], "st")
        assert st["layer_2"]["training"] == lux.tree.Static(True)
    assert int(res[0]["ddp_bn_buffers"]["layer_2.num_batches_tracked"]) == STEPS
    mean = "layer_2.running_mean"
    assert not torch.allclose(res[0]["ddp_bn_buffers"][mean], res[1]["ddp_bn_buffers"][mean])
    # the next forward (here in eval mode) broadcasts rank 0's buffers to every rank
    for r in (0, 1):
        _assert_identical(res[r]["ddp_bn_buffers_after_sync"], res[0]["ddp_bn_buffers"], "sync")
    # test mode with the synchronised statistics and parameters: the lux model's output
    ps = res[0]["ddp_bn"]
    st = lux.test_mode(lux.tree.map(torch.clone, res[0]["ddp_bn_lux_state"]))
    for r, (x, _) in enumerate(_halves()):
        y, _ = _bn()(x, ps, st)
        torch.testing.assert_close(res[r]["ddp_bn_eval"], y)


def _check_fsdp_batchnorm(res: list[dict[str, Any]]) -> None:
    params, states = _simulate(_bn(), sync_buffers=False)
    _assert_identical(res[0]["fsdp_bn"], res[1]["fsdp_bn"], "FSDP2 BatchNorm ranks")
    for r in (0, 1):
        _assert_close(res[r]["fsdp_bn"], params, f"FSDP2 BatchNorm rank {r}")
        for name in BUFFERS:  # each rank's own statistics, never synchronised
            got = res[r]["fsdp_bn_buffers"][f"layer_2.{name}"]
            torch.testing.assert_close(got, states[r]["layer_2"][name])


def test_to_torch_under_ddp_and_fsdp2(tmp_path: pathlib.Path) -> None:
    """Two gloo ranks: DDP and FSDP2 training of ``lux.to_torch`` modules (see the module
    docstring); the workers also run without any warning."""
    errors = finish(launch(HERE, str(tmp_path)), timeout=180)
    for err in errors:
        assert "Warning" not in err, err
    res = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [d["rank"] for d in res] == [0, 1] and [d["world"] for d in res] == [2, 2]
    _check_mlp(res)
    _check_ddp_batchnorm(res)
    _check_fsdp_batchnorm(res)


if __name__ == "__main__":
    torch.set_num_threads(1)
    _worker(pathlib.Path(sys.argv[1]))
