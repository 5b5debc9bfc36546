"""Quickstart: fit a small MLP to y = sin(3x) with explicit parameters.

Run:  python examples/quickstart.py          (about 10 s on a laptop CPU)

Shows the whole lux_torch workflow: describe a model, create its parameters and state
with an explicit key, take gradients with ``torch.func.grad`` over the parameter tree,
update with the pure optimizer ``lux.optim.adam``, switch to test mode, and print
the model and a summary table.
"""

from __future__ import annotations

import time

import torch

import lux_torch as lux


def main(steps: int = 1500, lr: float = 3e-3) -> float:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = lux.Chain(
        lux.Linear(1, 64, activation=torch.tanh),
        lux.Dropout(0.05),
        lux.Linear(64, 64, activation=torch.tanh),
        lux.Linear(64, 1),
    )
    print(model)

    key = lux.random.key(0)
    data_key, init_key = lux.random.split(key)
    x = lux.random.uniform(data_key, (256, 1), low=-1.0, high=1.0)
    y = torch.sin(3 * x)
    ps, st = lux.setup(init_key, model)

    mse = lux.losses.MSELoss()
    optimizer = lux.optim.adam(lr=lr)
    opt_state = optimizer.init(ps)

    def loss_fn(ps, st):
        pred, st = model(x, ps, st)
        return mse(pred, y), st

    def step(ps, st, opt_state):
        grads, (loss, st) = torch.func.grad_and_value(loss_fn, has_aux=True)(ps, st)
        updates, opt_state = optimizer.update(grads, opt_state, ps)
        return lux.optim.apply_updates(ps, updates), st, opt_state, loss

    start = time.perf_counter()
    for t in range(1, steps + 1):
        ps, st, opt_state, loss = step(ps, st, opt_state)
        if t % 300 == 0 or t == 1:
            print(f"step {t:5d}   loss {loss.item():.5f}")

    test_loss, _ = loss_fn(ps, lux.test_mode(st))  # dropout off
    print(f"final test-mode loss {test_loss.item():.5f} in {time.perf_counter() - start:.1f} s")
    print(lux.summary(model, x[:4], ps, lux.test_mode(st)))
    return test_loss.item()


if __name__ == "__main__":
    main()
