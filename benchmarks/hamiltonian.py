"""HamiltonianNN's field: lux (``ad="func"`` and ``ad="autograd"``) vs torch.nn + autograd.

Run:  python benchmarks/hamiltonian.py [--threads 2] [--rounds 15]

The reference is the usual PyTorch Hamiltonian network (Greydanus et al.'s code): an
``nn.Sequential`` ``H`` (2-64-tanh-64-tanh-1) and ``torch.autograd.grad(H(x).sum(), x,
create_graph=True)``. Both sides hold the same weights and see the same 32 states.

Rows (each: lux with one ``ad`` against the torch reference):

* field: one evaluation of ``[dH/dp, -dH/dq]``;
* field + backward: the evaluation and ``torch.autograd.grad`` of ``sum(field**2)``
  with respect to the parameters (double backward through ``H``);
* rk4 solve + backward: ``NeuralODE(HamiltonianNN(H), 11 times, method="rk4")`` and the
  gradient of ``sum(xs**2)`` (40 field evaluations), against ``torchdiffeq.odeint`` of
  the module.

Medians of interleaved rounds (``_harness.interleaved``). ``ad="func"`` pays functorch's
wrapping on every evaluation; ``ad="autograd"`` is the fast eager path.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import torch
import torchdiffeq
from _harness import interleaved, parse_args, print_table, ratio_row
from torch import nn

import lux_torch as lux
from lux_torch.ode import NeuralODE
from lux_torch.sciml.hamiltonian import HamiltonianNN

T = tuple(float(v) for v in torch.linspace(0.0, 1.0, 11))


class TorchHNN(nn.Module):
    """The torch.nn Hamiltonian network with ``ps``'s names (``model.layer_1`` ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(
            collections.OrderedDict(
                layer_1=nn.Linear(2, 64),
                tanh_1=nn.Tanh(),
                layer_2=nn.Linear(64, 64),
                tanh_2=nn.Tanh(),
                layer_3=nn.Linear(64, 1),
            )
        )

    def forward(self, t: Any, x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x_in = x if x.requires_grad else x.detach().requires_grad_(True)
            (dh,) = torch.autograd.grad(self.model(x_in).sum(), x_in, create_graph=True)
        return torch.cat([dh[..., 1:], -dh[..., :1]], dim=-1)


def _candidates(ad: str) -> dict[str, dict[str, Callable[[], object]]]:
    H = lux.Chain(
        lux.Linear(2, 64, activation=torch.tanh),
        lux.Linear(64, 64, activation=torch.tanh),
        lux.Linear(64, 1),
    )
    hnn = HamiltonianNN(H, ad=ad)
    node = NeuralODE(hnn, T, method="rk4")
    ps, st = lux.setup(0, hnn)
    ps = lux.tree.map(lambda p: p.requires_grad_(True), ps)
    module = TorchHNN()
    with torch.no_grad():
        for name, p in module.named_parameters():
            *path, leaf = name.split(".")
            tree = ps
            for key in path:
                tree = tree[key]
            p.copy_(tree[leaf])
    x = lux.random.normal(lux.random.key(1), (32, 2))
    leaves, params = lux.tree.leaves(ps), list(module.parameters())
    t = torch.tensor(T)
    node_ps, node_st = {"vector_field": ps}, {**lux.init_state(0, node), "vector_field": st}

    def grads(y: torch.Tensor, wrt: list[torch.Tensor]) -> object:
        return torch.autograd.grad((y**2).sum(), wrt, allow_unused=True)

    return {
        "field": {"torch": lambda: module(None, x), "lux": lambda: hnn(x, ps, st)},
        "field + backward": {
            "torch": lambda: grads(module(None, x), params),
            "lux": lambda: grads(hnn(x, ps, st)[0], leaves),
        },
        "rk4 solve + backward": {
            "torch": lambda: grads(torchdiffeq.odeint(module, x, t, method="rk4"), params),
            "lux": lambda: grads(node(x, node_ps, node_st)[0], leaves),
        },
    }


def main() -> None:
    args = parse_args(__doc__, rounds=15, number=20)
    rows = []
    for ad in ("func", "autograd"):
        for label, candidates in _candidates(ad).items():
            number = max(1, args.number // 10) if "solve" in label else args.number
            times = interleaved(candidates, rounds=args.rounds, number=number, warmup=3)
            rows.append(ratio_row(f"{label}, ad={ad!r}", times, "torch", "lux"))
    print_table(
        "HamiltonianNN field (2-64-64-1 MLP, 32 states)",
        rows,
        ["configuration", "torch µs", "lux µs", "lux / torch"],
    )


if __name__ == "__main__":
    main()
