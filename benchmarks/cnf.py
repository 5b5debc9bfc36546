"""torchdiffeq's CNF training step: lux ``CNF`` vs torchdiffeq's ``examples/cnf.py``.

Run:  python benchmarks/cnf.py [--threads 2] [--rounds 15] [--number 3]

The torch side rebuilds torchdiffeq's ``examples/cnf.py`` (its ``CNF``/``HyperNetwork``
modules and ``trace_df_dz``: the exact trace from ``d`` ``torch.autograd.grad`` calls,
``odeint`` of ``(z, logp_diff)`` from ``t1`` to ``t0``, ``-logp_x.mean()``, Adam lr 1e-3);
the lux side is ``examples/cnf.py``'s model, a :class:`lux_torch.sciml.cnf.CNF` whose
vector field is the same hypernetwork (hidden 32, width 64), trained by
:func:`lux_torch.train_step`. Same weights (copied from ``ps``), same batch (512 points of
``sklearn.datasets.make_circles(noise=0.06, factor=0.5)``, as torchdiffeq), same solver
over ``t = (0, 1)``. Every timed step starts from the same weights and optimizer state on
both sides (lux reuses one pure TrainState; torch copies its initial weights back and
clears Adam's state), so both sides do exactly the same solves.

Rows:

* exact trace, ``rk4`` with step 0.1 (``examples/cnf.py``'s solver);
* exact trace, ``dopri5`` at torchdiffeq's example tolerances (``rtol = atol = 1e-5``);
* Hutchinson's trace (Rademacher probe), ``rk4``: FFJORD's estimator on both sides, with
  the probe the CNF draws from ``st["key"]`` given to the torch side.

Medians of interleaved rounds (``_harness.interleaved``). Target: ratio lux / torch <= 1.0.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from collections.abc import Callable
from typing import Any

import torch
import torchdiffeq
from _harness import interleaved, parse_args, print_table, ratio_row
from sklearn.datasets import make_circles

import lux_torch as lux
from lux_torch.sciml.cnf import CNF

HIDDEN, WIDTH, DIM, SAMPLES = 32, 64, 2, 512
SOLVERS: dict[str, dict[str, Any]] = {
    "rk4": {"method": "rk4", "options": {"step_size": 0.1}},
    "dopri5": {"method": "dopri5", "rtol": 1e-5, "atol": 1e-5},
}


def _example() -> Any:
    """``examples/cnf.py`` as a module (its ``make_model`` builds the lux CNF)."""
    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "cnf.py"
    spec = importlib.util.spec_from_file_location("cnf_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cnf_example"] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- torchdiffeq's example


class HyperNetwork(torch.nn.Module):
    """torchdiffeq ``examples/cnf.py``: ``t`` -> the weights ``W, B, U`` of the field."""

    def __init__(self, in_out_dim: int, hidden_dim: int, width: int) -> None:
        super().__init__()
        blocksize = width * in_out_dim
        self.fc1 = torch.nn.Linear(1, hidden_dim)
        self.fc2 = torch.nn.Linear(hidden_dim, hidden_dim)
        self.fc3 = torch.nn.Linear(hidden_dim, 3 * blocksize + width)
        self.in_out_dim = in_out_dim
        self.hidden_dim = hidden_dim
        self.width = width
        self.blocksize = blocksize

    def forward(self, t: torch.Tensor) -> list[torch.Tensor]:
        params = t.reshape(1, 1)
        params = torch.tanh(self.fc1(params))
        params = torch.tanh(self.fc2(params))
        params = self.fc3(params)
        params = params.reshape(-1)
        W = params[: self.blocksize].reshape(self.width, self.in_out_dim, 1)
        U = params[self.blocksize : 2 * self.blocksize].reshape(self.width, 1, self.in_out_dim)
        G = params[2 * self.blocksize : 3 * self.blocksize].reshape(self.width, 1, self.in_out_dim)
        U = U * torch.sigmoid(G)
        B = params[3 * self.blocksize :].reshape(self.width, 1, 1)
        return [W, B, U]


def trace_df_dz(f: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """torchdiffeq ``examples/cnf.py``: the exact trace, one autograd call per dimension."""
    sum_diag = torch.zeros(z.shape[0], dtype=z.dtype)
    for i in range(z.shape[1]):
        sum_diag += torch.autograd.grad(f[:, i].sum(), z, create_graph=True)[0][:, i]
    return sum_diag


class TorchCNF(torch.nn.Module):
    """torchdiffeq ``examples/cnf.py``'s ``CNF``; ``probe`` switches to FFJORD's estimator."""

    def __init__(self, in_out_dim: int, hidden_dim: int, width: int) -> None:
        super().__init__()
        self.in_out_dim = in_out_dim
        self.hidden_dim = hidden_dim
        self.width = width
        self.hyper_net = HyperNetwork(in_out_dim, hidden_dim, width)
        self.probe: torch.Tensor | None = None

    def forward(self, t: torch.Tensor, states: Any) -> tuple[torch.Tensor, torch.Tensor]:
        z = states[0]
        batchsize = z.shape[0]
        with torch.set_grad_enabled(True):
            z.requires_grad_(True)
            W, B, U = self.hyper_net(t)
            Z = torch.unsqueeze(z, 0).repeat(self.width, 1, 1)
            h = torch.tanh(torch.matmul(Z, W) + B)
            dz_dt = torch.matmul(h, U).mean(0)
            if self.probe is None:
                trace = trace_df_dz(dz_dt, z)
            else:
                (e_dzdx,) = torch.autograd.grad(dz_dt, z, self.probe, create_graph=True)
                trace = (e_dzdx * self.probe).sum(-1)
            dlogp_z_dt = -trace.view(batchsize)
        return dz_dt, dlogp_z_dt


# --------------------------------------------------------------------------- the cases


def _data() -> torch.Tensor:
    points, _ = make_circles(n_samples=SAMPLES, noise=0.06, factor=0.5, random_state=0)
    return torch.tensor(points, dtype=torch.float32)


def _torch_model(ps: Any) -> TorchCNF:
    func = TorchCNF(DIM, HIDDEN, WIDTH)
    hyper = ps["ode"]["vector_field"]["field"]["hyper"]
    with torch.no_grad():
        for fc, name in ((func.hyper_net.fc1, "layer_1"), (func.hyper_net.fc2, "layer_2")):
            fc.weight.copy_(hyper[name]["weight"])
            fc.bias.copy_(hyper[name]["bias"])
        func.hyper_net.fc3.weight.copy_(hyper["layer_3"]["weight"])
        func.hyper_net.fc3.bias.copy_(hyper["layer_3"]["bias"])
    return func


def _cases(
    example: Any, trace: str, solver: dict[str, Any], x: torch.Tensor
) -> tuple[dict[str, Callable[[], Any]], Callable[[], tuple[int, int]]]:
    base = example.make_model(DIM, HIDDEN, WIDTH, trace)
    cnf = CNF(base.vector_field, (0.0, 1.0), trace=trace, time_dependent=True, **solver)
    ps, st = lux.setup(0, cnf)
    func = _torch_model(ps)
    if trace == "hutchinson":  # the probe the CNF draws for its first call
        signs = lux.random.bernoulli(lux.random.split(st["key"])[1], 0.5, x.shape)
        func.probe = torch.where(signs, 1.0, -1.0)
    opt = torch.optim.Adam(func.parameters(), lr=1e-3)
    start = [p.detach().clone() for p in func.parameters()]
    first = lux.TrainState(cnf, ps, st, lux.optim.adam(1e-3))
    box = [first]
    nfe = [0]
    losses: dict[str, float] = {}
    x_torch = x.clone()  # the example sets requires_grad on its input in place
    t = torch.tensor([1.0, 0.0])
    p_z0 = torch.distributions.MultivariateNormal(torch.zeros(DIM), torch.eye(DIM))

    def counting(t: torch.Tensor, states: Any) -> Any:
        nfe[0] += 1
        return func(t, states)

    def torch_step() -> None:
        with torch.no_grad():
            for p, p0 in zip(func.parameters(), start, strict=True):
                p.copy_(p0)
        opt.state.clear()
        opt.zero_grad(set_to_none=True)
        nfe[0] = 0
        logp_diff_t1 = torch.zeros(x.shape[0], 1)
        z_t, logp_diff_t = torchdiffeq.odeint(
            counting, (x_torch, logp_diff_t1.view(-1)), t, **solver
        )
        z_t0, logp_diff_t0 = z_t[-1], logp_diff_t[-1]
        logp_x = p_z0.log_prob(z_t0) - logp_diff_t0.view(-1)
        loss = -logp_x.mean(0)
        loss.backward()
        opt.step()
        losses["torch"] = float(loss.detach())

    def lux_step() -> None:
        box[0], loss, _ = lux.train_step(example.nll_loss, x, first)
        losses["lux"] = float(loss)

    def counts() -> tuple[int, int]:
        """Vector-field evaluations of each side's step, after checking equal losses."""
        if abs(losses["lux"] - losses["torch"]) > 1e-4 * abs(losses["torch"]):
            raise AssertionError(f"the two sides compute different losses: {losses}")
        return int(box[0].states["ode"]["stats"]["nfe"]), nfe[0]

    return {"torch": torch_step, "lux": lux_step}, counts


def main() -> None:
    args = parse_args(__doc__, rounds=15, number=3)
    example = _example()
    x = _data()
    rows = []
    for trace, solver_name in (("exact", "rk4"), ("exact", "dopri5"), ("hutchinson", "rk4")):
        candidates, counts = _cases(example, trace, SOLVERS[solver_name], x)
        times = interleaved(candidates, rounds=args.rounds, number=args.number, warmup=3)
        ours, theirs = counts()
        label = f"{trace} trace, {solver_name} (nfe {ours} / {theirs})"
        rows.append(ratio_row(label, times, "torch", "lux"))
    print_table(
        f"CNF training step (hypernetwork {HIDDEN}/{WIDTH}, batch {SAMPLES}, t = 0 -> 1)",
        rows,
        ["case", "torchdiffeq example µs", "lux µs", "lux / torch"],
    )


if __name__ == "__main__":
    main()
