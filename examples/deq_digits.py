"""A convolutional deep equilibrium classifier on scikit-learn's 8x8 digits (no download).

Run:  python examples/deq_digits.py [--epochs 12] [--out deq_digits.png]
      (about 20 s on 2 CPU threads; test accuracy DEQ 0.986, explicit CNN 0.983)

The DEQ replaces a stack of weight-tied convolutions by their fixed point (Bai et al. 2019):

    u  = Conv2d(1 => C, 3x3)(x)                       input injection
    z* = tanh(Conv2d(C => C, 3x3)(z*) + u)            DEQ: Anderson solve, implicit gradient
    y  = Linear(C*16 => 10)(Flatten(MaxPool2d(2)(z*)))

It is compared with the explicit CNN of the same size (the same layers, the two
convolutions stacked once), trained the same way. Shows: :class:`lux_torch.sciml.deq.DEQ`
inside a ``lux.Chain`` trained by :func:`lux_torch.train_step` with exact implicit
gradients; Bai et al. 2021's Jacobian regularization read from the state
(``st[...]["regularization"]["jacobian"]``) and added to the loss; the solver statistics in
``st[...]["stats"]``; and, after training, the residual ``||f(z) - z||`` against the solver
iteration for the three solvers on the test set (Broyden's unit steps overshoot on this
barely contractive map; the solver returns each sample's best iterate). The PNG shows that
curve and the test accuracy per epoch of both models.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch
from sklearn.datasets import load_digits
from tqdm import tqdm

import lux_torch as lux
from lux_torch.sciml.deq import DEQ
from lux_torch.sciml.fixed_point import solve

Data = tuple[torch.Tensor, torch.Tensor]
CHANNELS = 16
JACOBIAN_WEIGHT = 2.0


def load_data(key: torch.Tensor) -> tuple[Data, Data]:
    """The digits as ``(N, 1, 8, 8)`` images in [0, 1], shuffled with ``key``; the last
    fifth is the test set."""
    images, labels = load_digits(return_X_y=True)
    order = lux.random.permutation(key, len(labels)).numpy()
    x = torch.as_tensor(images[order], dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.as_tensor(labels[order], dtype=torch.int64)
    cut = len(y) * 4 // 5
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def _readout() -> lux.Chain:
    return lux.Chain(lux.MaxPool2d(2), lux.Flatten(), lux.Linear(CHANNELS * 16, 10))


def make_deq(max_iter: int = 25) -> lux.Chain:
    cell = lux.Chain(
        lux.Parallel(torch.add, lux.Conv2d(CHANNELS, CHANNELS, 3, padding=1), lux.NoOpLayer()),
        torch.tanh,
    )
    deq = DEQ(cell, solver="anderson", max_iter=max_iter, rtol=1e-3, atol=1e-5,
              regularize="jacobian", on_nonconvergence="ignore")  # fmt: skip
    return lux.Chain(injection=lux.Conv2d(1, CHANNELS, 3, padding=1), deq=deq, readout=_readout())


def make_cnn() -> lux.Chain:
    """The explicit CNN with the DEQ's layers (and parameter count), each used once."""
    return lux.Chain(
        injection=lux.Conv2d(1, CHANNELS, 3, padding=1, activation=torch.tanh),
        conv=lux.Conv2d(CHANNELS, CHANNELS, 3, padding=1, activation=torch.tanh),
        readout=_readout(),
    )


def deq_loss(model: lux.Layer, ps: Any, st: Any, data: Data) -> tuple[torch.Tensor, Any, Any]:
    """Cross-entropy plus the Jacobian penalty of the DEQ; stats: the solver's statistics."""
    x, y = data
    logits, new_st = model(x, ps, st)
    deq_st = new_st["deq"]
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss = loss + JACOBIAN_WEIGHT * deq_st["regularization"]["jacobian"]
    return loss, new_st, deq_st["stats"]


def accuracy(model: lux.Layer, ps: Any, st: Any, data: Data) -> float:
    x, y = data
    with torch.no_grad():
        logits, _ = model(x, ps, st)
    return (logits.argmax(1) == y).float().mean().item()


def train(
    model: lux.Layer, loss_fn: Any, train_data: Data, test_data: Data, key: torch.Tensor,
    epochs: int, batch_size: int, lr: float, bar: Any,
) -> tuple[lux.TrainState, list[float], list[int]]:  # fmt: skip
    """Adam with cosine decay; returns the state, test accuracy per epoch, and the DEQ's
    forward iterations per step (empty for the CNN)."""
    init_key, shuffle_key = lux.random.split(key)
    x, y = train_data
    n_batches = x.shape[0] // batch_size  # drop the last partial batch: fixed shapes
    ps, st = lux.setup(init_key, model)
    schedule = lux.optim.cosine_decay_schedule(lr, epochs * n_batches)
    ts = lux.TrainState(model, ps, st, lux.optim.adam(schedule))
    accuracies, iterations = [], []
    for epoch_key in lux.random.split(shuffle_key, epochs):
        perm = lux.random.permutation(epoch_key, x.shape[0])
        for i in range(n_batches):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            ts, loss, stats = lux.train_step(loss_fn, (x[idx], y[idx]), ts)
            if stats:
                iterations.append(int(stats["iterations"]))
            bar.update(1)
        accuracies.append(accuracy(model, ts.params, ts.states, test_data))
        bar.set_postfix(loss=f"{loss.item():.3f}", test_acc=f"{accuracies[-1]:.3f}")
    return ts, accuracies, iterations


def residual_curves(ts: lux.TrainState, x: torch.Tensor, iters: int) -> dict[str, list[float]]:
    """The largest per-sample residual ``||f(z) - z||`` after each of ``iters`` evaluations
    of the trained DEQ's ``f`` on ``x``, per solver (:func:`fixed_point.solve`'s callback)."""
    chain: lux.Chain = ts.model  # type: ignore[assignment]
    ps, st = ts.params, ts.states
    u, _ = chain.layers["injection"](x, ps["injection"], st["injection"])
    deq: DEQ = chain.layers["deq"]  # type: ignore[assignment]

    def f(z: torch.Tensor) -> torch.Tensor:
        return deq.model((z, u), ps["deq"]["model"], st["deq"]["model"])[0]

    curves: dict[str, list[float]] = {}
    for solver in ("fixed_point", "anderson", "broyden"):
        curve = curves[solver] = []
        solve(f, torch.zeros_like(u), solver=solver, max_iter=iters, atol=1e-9, rtol=0.0,
              callback=lambda k, res, curve=curve: curve.append(float(res.max())))  # fmt: skip
    return curves


def main(
    epochs: int = 12,
    out: str = "deq_digits.png",
    progress: bool = True,
    *,
    batch_size: int = 64,
    lr: float = 5e-3,
    seed: int = 0,
) -> tuple[float, float]:
    """Train the DEQ and the CNN; save the figure; return their final test accuracies."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    data_key, model_key = lux.random.split(lux.random.key(seed))
    train_data, test_data = load_data(data_key)
    deq_model, cnn = make_deq(), make_cnn()
    print(deq_model)
    assert lux.param_count(deq_model) == lux.param_count(cnn)
    n_batches = train_data[0].shape[0] // batch_size
    bar = tqdm(total=2 * epochs * n_batches, disable=not progress, desc="deq+cnn", unit="step")
    start = time.perf_counter()
    deq_ts, deq_acc, deq_iters = train(deq_model, deq_loss, train_data, test_data, model_key,
                                       epochs, batch_size, lr, bar)  # fmt: skip
    deq_time = time.perf_counter() - start
    cnn_loss = lux.losses.CrossEntropyLoss()
    _, cnn_acc, _ = train(cnn, cnn_loss, train_data, test_data, model_key, epochs, batch_size,
                          lr, bar)  # fmt: skip
    bar.close()
    curves = residual_curves(deq_ts, test_data[0], iters=30)
    _plot(out, curves, deq_acc, cnn_acc)
    print(
        f"DEQ: final test accuracy {deq_acc[-1]:.4f} in {deq_time:.1f} s, forward solver "
        f"iterations per step {deq_iters[0]} (first) -> {deq_iters[-1]} (last); "
        f"explicit CNN ({lux.param_count(cnn)} parameters, same as the DEQ): "
        f"final test accuracy {cnn_acc[-1]:.4f}"
    )
    for solver, curve in curves.items():
        print(f"residual after 10/30 {solver} iterations: {curve[9]:.2e} / {curve[-1]:.2e}")
    print(f"figure saved to {out}")
    return deq_acc[-1], cnn_acc[-1]


def _plot(
    out: str, curves: dict[str, list[float]], deq_acc: list[float], cnn_acc: list[float]
) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for solver, curve in curves.items():
        left.semilogy(range(1, len(curve) + 1), curve, marker=".", label=solver)
    left.set_xlabel("solver iteration (evaluations of f)")
    left.set_ylabel("largest residual ||f(z) - z|| on the test set")
    left.set_title("forward solve of the trained DEQ")
    left.legend()
    epochs = range(1, len(deq_acc) + 1)
    right.plot(epochs, deq_acc, marker="o", label="DEQ (implicit gradient)")
    right.plot(epochs, cnn_acc, marker="s", label="explicit CNN, same size")
    right.set_xlabel("epoch")
    right.set_ylabel("test accuracy")
    right.set_title("scikit-learn digits")
    right.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12, help="passes over the training set")
    parser.add_argument("--out", default="deq_digits.png", help="output PNG")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args()
    main(epochs=args.epochs, out=args.out, progress=not args.no_progress)
