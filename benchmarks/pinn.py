"""One PINN training step (nested AD): lux compiled vs eager torch.func on an nn.Module.

Run:  python benchmarks/pinn.py [--threads 2] [--rounds 10]

The step of ``examples/pinn_poisson.py``: an MLP 3-32-32-32-1 (tanh) ``u(x, y, t)``; the
loss is the mean squared residual of ``u_t - u_xx - u_yy`` at 256 interior points, with
the gradient and Hessian in the input from ``vmap(jacfwd(jacrev(u)))``, plus the squared
misfit at 128 boundary points; then an Adam update. Columns (median seconds per step,
measured interleaved in one run after a warm-up, ratio to the first):

* torch eager: ``torch.func.functional_call`` of the ``nn.Module`` under the same
  transforms, ``loss.backward()``, ``torch.optim.Adam`` (foreach);
* torch.compile: the same with the loss function under ``torch.compile`` (PyTorch's recipe;
  reported as failing where it cannot run it: on torch 2.13 CPU the compiled backward fails
  with "ZeroTensors are immutable");
* lux eager: ``lux.train_step(pinn_loss, data, ts)``;
* lux compiled: ``lux.train_step(..., compile=True)`` (the whole step, nested derivatives
  included, traced into one Inductor graph).

Target (issue 18): lux compiled <= 0.5 of torch eager.
"""

from __future__ import annotations

import importlib.util
import pathlib
from collections.abc import Callable
from typing import Any

import torch
from _harness import interleaved, parse_args, print_table

import lux_torch as lux

_spec = importlib.util.spec_from_file_location(
    "pinn_poisson", pathlib.Path(__file__).parents[1] / "examples" / "pinn_poisson.py"
)
assert _spec is not None and _spec.loader is not None
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)

WIDTH = 32


def _torch_step(data: dict[str, torch.Tensor], compile: bool) -> Callable[[], Any]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, WIDTH),
        torch.nn.Tanh(),
        torch.nn.Linear(WIDTH, WIDTH),
        torch.nn.Tanh(),
        torch.nn.Linear(WIDTH, WIDTH),
        torch.nn.Tanh(),
        torch.nn.Linear(WIDTH, 1),
    )
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(params.values(), lr=1e-3)

    def loss_fn(params: dict[str, torch.Tensor], data: dict[str, torch.Tensor]) -> Any:
        def u(point: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(model, params, (point.unsqueeze(0),)).squeeze()

        def grad_twice(point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            g = torch.func.jacrev(u)(point)
            return g, g

        hess, grad = torch.func.vmap(torch.func.jacfwd(grad_twice, has_aux=True))(data["interior"])
        residual = grad[:, 2] - hess[:, 0, 0] - hess[:, 1, 1]
        fit = model(data["boundary"]).squeeze(-1) - data["u_boundary"]
        return (residual**2).mean() + (fit**2).mean()

    loss_c = torch.compile(loss_fn, fullgraph=True) if compile else loss_fn

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_c(params, data).backward()
        opt.step()

    return step


def _lux_step(data: dict[str, torch.Tensor], compile: bool) -> Callable[[], Any]:
    model = lux.Chain(
        lux.Linear(3, WIDTH, activation=torch.tanh),
        lux.Linear(WIDTH, WIDTH, activation=torch.tanh),
        lux.Linear(WIDTH, WIDTH, activation=torch.tanh),
        lux.Linear(WIDTH, 1),
    )
    ps, st = lux.setup(0, model)
    box = [lux.TrainState(model, ps, st, lux.optim.adam(1e-3))]

    def step() -> None:
        box[0], _, _ = lux.train_step(example.pinn_loss, data, box[0], compile=compile)

    return step


def _works(name: str, step: Callable[[], Any]) -> str | None:
    """``None`` if ``step`` runs, else why not (one line)."""
    try:
        step()
    except Exception as error:
        return f"fails ({type(error).__name__})"
    return None


def main() -> None:
    args = parse_args(__doc__, rounds=10)
    data = example.sample(lux.random.key(0), 256, 128)
    steps: dict[str, Callable[[], Any]] = {
        "torch eager": _torch_step(data, compile=False),
        "torch.compile": _torch_step(data, compile=True),
        "lux eager": _lux_step(data, compile=False),
        "lux compiled": _lux_step(data, compile=True),
    }
    failed = {n: why for n, s in steps.items() if (why := _works(n, s)) is not None}
    t = interleaved(
        {n: s for n, s in steps.items() if n not in failed},
        rounds=args.rounds,
        number=5,
        warmup=5,
    )
    base = t["torch eager"]
    row = ["PINN 3-32-32-32-1 tanh, 256+128 points", f"{base * 1e3:.2f}"]
    row += [failed.get(n) or f"{t[n] / base:.2f}x ({t[n] * 1e3:.2f})" for n in list(steps)[1:]]
    headers = ["step", "torch eager (ms)"] + [f"{n} (ratio, ms)" for n in list(steps)[1:]]
    print_table(
        "One PINN training step, ratio to eager torch.func + torch.optim.Adam",
        [tuple(row)],
        headers,
    )


if __name__ == "__main__":
    main()
