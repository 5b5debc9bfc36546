"""NeuralSDE vs torchsde + nn.Module: same weights, same Brownian path.

Run:  python benchmarks/neural_sde.py [--threads 1] [--rounds 15]

(The tensors are tiny, (32, 32) at most: on a busy 2-core machine a second thread only adds
spinning, which swamps both sides; the table below was measured with ``--threads 1``.)

The SDE: drift ``Linear(4, 32) - tanh - Linear(32, 4)``; diffusion ``Scale(4) - sigmoid``
(elementwise: diagonal noise) or ``Linear(4, 12) - tanh - reshape to (4, 3)`` (general
noise, 3 Brownian channels); ``y0`` of shape ``(32, 4)``, 11 output times in ``[0, 1]``,
``dt = 0.02`` (50 steps), float32. The torch side is torchsde's usual style: an
``nn.Module`` with ``f`` and ``g`` holding the same weights, solved with
``torchsde.sdeint``/``sdeint_adjoint`` on a fresh ``torchsde.BrownianInterval`` with the
entropy and Lévy-area approximation of the lux call (from ``NeuralSDE.brownian_motion``), so
both sides do exactly the same solve on the same path; each side builds its Brownian
interval inside the timed call.

Rows per configuration: ``forward`` (the solve under ``torch.no_grad``), ``forward +
backward`` (``torch.autograd.grad`` of ``ys.sum()`` w.r.t. every parameter, through the
solver) and ``adjoint`` (the same with ``sdeint_adjoint``). Medians of interleaved rounds
(``_harness.interleaved``). Target: ratio lux / torch <= 1.0.

Measured (torchsde 0.2.6, torch 2.13.0+cpu, 1 thread, a quiet 2-core machine)::

    | case                                                  | torchsde µs | lux µs   | lux / torch |
    |-------------------------------------------------------|-------------|----------|-------------|
    | ito diagonal (srk): forward                           | 46325.1     | 44307.9  | 0.956       |
    | ito diagonal (srk): forward + backward                | 120541.4    | 118216.3 | 0.981       |
    | ito diagonal (srk): adjoint forward + backward        | 132181.2    | 129360.5 | 0.979       |
    | stratonovich general (midpoint): forward              | 12852.3     | 12185.9  | 0.948       |
    | stratonovich general (midpoint): forward + backward   | 24880.9     | 24108.4  | 0.969       |
    | stratonovich general (midpoint): adjoint fwd + bwd    | 77252.3     | 75825.5  | 0.982       |
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import torch
import torchsde
from _harness import interleaved, parse_args, print_table, ratio_row
from torch import nn

import lux_torch as lux
from lux_torch.sciml.sde import NeuralSDE

D, BATCH, HIDDEN, M = 4, 32, 32, 3
T = tuple(torch.linspace(0.0, 1.0, 11).tolist())
DT = 0.02


def _lux(sde_type: str, noise_type: str, adjoint: bool) -> tuple[NeuralSDE, Any, Any]:
    drift = lux.Chain(lux.Linear(D, HIDDEN, activation=torch.tanh), lux.Linear(HIDDEN, D))
    if noise_type == "diagonal":
        # elementwise (g_i reads y_i only), as diagonal noise with srk requires
        diffusion: lux.Layer = lux.Scale(D, activation=torch.sigmoid)
    else:
        diffusion = lux.Chain(lux.Linear(D, D * M, activation=torch.tanh), lux.Reshape((D, M)))
    size = M if noise_type == "general" else None
    sde = NeuralSDE(
        drift,
        diffusion,
        T,
        sde_type=sde_type,
        noise_type=noise_type,
        brownian_size=size,
        dt=DT,
        adjoint=adjoint,
    )
    ps, st = lux.setup(0, sde)
    return sde, ps, st


class _ElementwiseSigmoid(nn.Module):
    """``sigmoid(weight * y + bias)``, per channel (lux.Scale's maths)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(D))
        self.bias = nn.Parameter(torch.zeros(D))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(y * self.weight + self.bias)


class TorchSDE(nn.Module):
    """torchsde's usual style, with ``ps``'s parameter names."""

    def __init__(self, sde: NeuralSDE, ps: Any) -> None:
        super().__init__()
        self.sde_type, self.noise_type = sde.sde_type, sde.noise_type
        self.drift = nn.Sequential(
            collections.OrderedDict(
                layer_1=nn.Linear(D, HIDDEN), tanh=nn.Tanh(), layer_2=nn.Linear(HIDDEN, D)
            )
        )
        if sde.noise_type == "diagonal":
            self.diffusion: nn.Module = _ElementwiseSigmoid()
            sd = {"diffusion." + k: v for k, v in ps["diffusion"].items()}
        else:
            self.diffusion = nn.Sequential(
                collections.OrderedDict(
                    layer_1=nn.Linear(D, D * M), tanh=nn.Tanh(), layer_2=nn.Unflatten(1, (D, M))
                )
            )
            sd = {"diffusion." + p: v for p, v in _flat(ps["diffusion"]).items()}
        sd |= {"drift." + p: v for p, v in _flat(ps["drift"]).items()}
        self.load_state_dict(sd, strict=True)

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.drift(y)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.diffusion(y)


def _flat(tree: Any) -> dict[str, torch.Tensor]:
    return dict(zip(lux.tree.paths(tree), lux.tree.leaves(tree), strict=True))


def _cases(
    sde_type: str, noise_type: str, adjoint: bool, grad: bool
) -> dict[str, Callable[[], Any]]:
    sde, ps, st = _lux(sde_type, noise_type, adjoint)
    y0 = lux.random.normal(lux.random.key(1), (BATCH, D))
    module = TorchSDE(sde, ps)
    params = list(module.parameters())
    bm = sde.brownian_motion(y0, st)  # the lux call's path: its entropy and Lévy area
    t = torch.tensor(T)
    solve = torchsde.sdeint_adjoint if adjoint else torchsde.sdeint
    extra = {"adjoint_params": params} if adjoint else {}
    if grad:
        ps = lux.tree.map(lambda p: p.detach().requires_grad_(True), ps)
    leaves = lux.tree.leaves(ps)

    def torch_call() -> None:
        with torch.set_grad_enabled(grad):
            path = torchsde.BrownianInterval(
                t0=T[0],
                t1=T[-1],
                size=tuple(bm.shape),
                dtype=y0.dtype,
                device=y0.device,
                entropy=bm.entropy,
                levy_area_approximation=bm.levy_area_approximation,
            )
            ys = solve(module, y0, t, bm=path, dt=DT, **extra)
            if grad:
                torch.autograd.grad(ys.sum(), params)

    def lux_call() -> None:
        with torch.set_grad_enabled(grad):
            ys, _ = sde(y0, ps, st)
            if grad:
                torch.autograd.grad(ys.sum(), leaves)

    # the same path and the same solve on both sides
    with torch.no_grad():
        ours = sde(y0, ps, st)[0]
        theirs = solve(module, y0, t, bm=sde.brownian_motion(y0, st), dt=DT, **extra)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    return {"torch": torch_call, "lux": lux_call}


def main() -> None:
    args = parse_args(__doc__, rounds=15, number=5)
    rows = []
    for sde_type, noise_type in (("ito", "diagonal"), ("stratonovich", "general")):
        method = _lux(sde_type, noise_type, False)[0].solver
        for label, adjoint, grad in (
            ("forward", False, False),
            ("forward + backward", False, True),
            ("adjoint forward + backward", True, True),
        ):
            candidates = _cases(sde_type, noise_type, adjoint, grad)
            times = interleaved(candidates, rounds=args.rounds, number=args.number, warmup=3)
            rows.append(
                ratio_row(f"{sde_type} {noise_type} ({method}): {label}", times, "torch", "lux")
            )
    print_table(
        f"NeuralSDE, batch {BATCH}, d {D}, {len(T)} times, dt {DT} (50 steps)",
        rows,
        ["case", "torchsde + nn.Module µs", "lux µs", "lux / torch"],
    )


if __name__ == "__main__":
    main()
