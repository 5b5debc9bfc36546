"""One Adam training step (forward, backward, update): lux vs nn.Module + torch.optim.Adam.

Run:  python benchmarks/train_step.py [--threads 2] [--rounds 30] [--baseline REV]

Rows: (a) tiny MLP 2-32-32-1 tanh, batch 64, MSE; (b) medium MLP 784-512-512-10 relu,
batch 128, cross-entropy. Every column is the median seconds per step divided by the
eager ``nn.Module`` + ``torch.optim.Adam`` (default, foreach) step, all measured
interleaved in one run after a warm-up:

* torch fused: ``torch.optim.Adam(fused=True)``;
* torch.compile: ``torch.compile`` of the module and of ``optimizer.step`` (PyTorch's
  recipe; ``backward`` runs in between);
* lux eager: ``lux.train_step(...)`` (autograd path, ``check_finite=True``; pure: the
  fused Adam kernel runs on copies of the parameters and moments);
* lux donate: the same with ``donate=True`` (the fused kernel updates the train state's
  own buffers in place, like JAX's ``donate_argnums``);
* lux compiled: ``lux.train_step(..., compile=True)`` (forward, backward and Adam traced
  into one Inductor graph, run without Dynamo; see ``lux_torch.training``);
* lux compiled+donate: ``compile=True, donate=True`` (from 65,536 parameters: forward and
  backward in one graph, then the fused Adam kernel in place on the train state's
  buffers; smaller models run the one pure graph, which is faster there);
* jax/flax jit: only when ``jax``, ``flax`` and ``optax`` are importable (never a
  dependency): a ``jax.jit`` step of the same network with ``optax.adam``.

``--baseline REV`` adds "lux eager @REV" and "lux donate @REV": lux_torch as of that git
revision (``_harness.load_baseline``), in the same interleaved rounds.

Targets (training issue, CPU, <= 2 threads): tiny compiled <= 0.35, eager <= 1.10;
medium compiled <= 0.85, eager <= 1.05.
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from _harness import interleaved, load_baseline, parse_args, print_table

import lux_torch as lux

CASES = {
    "tiny 2-32-32-1 tanh, b64, MSE": ((2, 32, 32, 1), "tanh", 64),
    "medium 784-512-512-10 relu, b128, CE": ((784, 512, 512, 10), "relu", 128),
}


def _data(sizes: tuple[int, ...], batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, sizes[0], generator=gen)
    if sizes[-1] == 1:
        return x, torch.sin(x.sum(1, keepdim=True))
    return x, torch.randint(0, sizes[-1], (batch,), generator=gen)


def _torch_model(sizes: tuple[int, ...], act: str) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh() if act == "tanh" else torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def _torch_step(
    sizes: tuple[int, ...], act: str, x: torch.Tensor, y: torch.Tensor, mode: str
) -> Callable[[], Any]:
    model = _torch_model(sizes, act)
    loss_fn = F.mse_loss if sizes[-1] == 1 else F.cross_entropy
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=mode == "fused")
    forward: Callable[..., Any] = model
    opt_step: Callable[[], Any] = opt.step
    if mode == "compile":
        forward = torch.compile(model)
        opt_step = torch.compile(opt.step)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(forward(x), y).backward()
        opt_step()

    return step


def _lux_step(
    sizes: tuple[int, ...],
    act: str,
    x: torch.Tensor,
    y: torch.Tensor,
    compile: bool,
    donate: bool = False,
    lux: Any = lux,
) -> Callable[[], Any]:
    activation = torch.tanh if act == "tanh" else torch.relu
    n = len(sizes) - 1
    model = lux.Chain(
        *(
            lux.Linear(a, b, activation=activation if i < n - 1 else None)
            for i, (a, b) in enumerate(itertools.pairwise(sizes))
        )
    )
    ps, st = lux.setup(0, model)
    loss_fn = lux.losses.MSELoss() if sizes[-1] == 1 else lux.losses.CrossEntropyLoss()
    box = [lux.TrainState(model, ps, st, lux.optim.adam(1e-3))]

    def step() -> None:
        box[0], _, _ = lux.train_step(loss_fn, (x, y), box[0], compile=compile, donate=donate)

    return step


def _jax_step(sizes: tuple[int, ...], act: str, x: torch.Tensor, y: torch.Tensor) -> Any:
    import flax.linen as nn  # type: ignore[import-not-found]
    import jax  # type: ignore[import-not-found]
    import jax.numpy as jnp  # type: ignore[import-not-found]
    import optax  # type: ignore[import-not-found]

    activation = jnp.tanh if act == "tanh" else jax.nn.relu

    class MLP(nn.Module):  # type: ignore[misc]
        @nn.compact
        def __call__(self, h: Any) -> Any:
            for i, width in enumerate(sizes[1:]):
                h = nn.Dense(width)(h)
                if i < len(sizes) - 2:
                    h = activation(h)
            return h

    model, tx = MLP(), optax.adam(1e-3)
    xj, yj = jnp.asarray(x.numpy()), jnp.asarray(y.numpy())
    params = model.init(jax.random.PRNGKey(0), xj)
    if sizes[-1] == 1:

        def loss(p: Any) -> Any:
            return jnp.mean((model.apply(p, xj) - yj) ** 2)
    else:

        def loss(p: Any) -> Any:
            logits = model.apply(p, xj)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yj).mean()

    @jax.jit
    def update(p: Any, s: Any) -> Any:
        value, grads = jax.value_and_grad(loss)(p)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    box = [params, tx.init(params)]

    def step() -> None:
        box[0], box[1], value = update(box[0], box[1])
        value.block_until_ready()

    return step


def main() -> None:
    args = parse_args(__doc__, baseline=True)
    old = load_baseline(args.baseline) if args.baseline else None
    have_jax = all(importlib.util.find_spec(m) for m in ("jax", "flax", "optax"))
    names = ["torch eager", "torch fused", "torch.compile", "lux eager", "lux donate"]
    names += ["lux compiled", "lux compiled+donate"]
    names += ["jax/flax jit"] if have_jax else []
    names += [f"lux eager @{args.baseline}", f"lux donate @{args.baseline}"] if old else []
    rows = []
    for label, (sizes, act, batch) in CASES.items():
        x, y = _data(sizes, batch)
        steps: dict[str, Callable[[], Any]] = {
            "torch eager": _torch_step(sizes, act, x, y, "foreach"),
            "torch fused": _torch_step(sizes, act, x, y, "fused"),
            "torch.compile": _torch_step(sizes, act, x, y, "compile"),
            "lux eager": _lux_step(sizes, act, x, y, compile=False),
            "lux donate": _lux_step(sizes, act, x, y, compile=False, donate=True),
            "lux compiled": _lux_step(sizes, act, x, y, compile=True),
            "lux compiled+donate": _lux_step(sizes, act, x, y, compile=True, donate=True),
        }
        if have_jax:
            steps["jax/flax jit"] = _jax_step(sizes, act, x, y)
        if old is not None:
            for mode in ("eager", "donate"):
                steps[f"lux {mode} @{args.baseline}"] = _lux_step(
                    sizes, act, x, y, compile=False, donate=mode == "donate", lux=old
                )
        number = 50 if sizes[0] < 100 else 5
        t = interleaved(steps, rounds=args.rounds, number=number, warmup=30)
        base = t["torch eager"]
        row = [label, f"{base * 1e6:.0f}"]
        row += [f"{t[n] / base:.2f}x ({t[n] * 1e6:.0f})" for n in names[1:]]
        rows.append(tuple(row))
    headers = ["Adam step", "torch eager (µs)"] + [f"{n} (ratio, µs)" for n in names[1:]]
    print_table("One training step, ratio to eager nn.Module + torch.optim.Adam", rows, headers)


if __name__ == "__main__":
    main()
