"""An LSTM that tells clockwise from anticlockwise spirals.

Run:  python examples/lstm_spirals.py [--epochs 8] [--out lstm_spirals.png]
      (about 5 s on one CPU thread; reaches about 100% test accuracy, >= 99% after the
      first epoch)

Shows: a sequence classifier built from ``lux.Recurrence(lux.LSTMCell(...))``, which runs
the cell over the time axis and returns the last hidden state, so it chains straight into
a ``lux.Linear`` head; a synthetic data set drawn entirely from explicit ``lux.random``
keys (no global RNG): each sample is a noisy 2-D trajectory of ``T = 20`` points along a
spiral with a random start angle, start radius, angular speed and growth, turning
clockwise (label 0) or anticlockwise (label 1); Adam with ``CrossEntropyLoss``; a tqdm
bar; test accuracy after every epoch; and a PNG with test trajectories coloured by their
predicted class next to the training loss curve.

    x: (N, T, 2)  ->  Recurrence(LSTMCell(2 => 32))  ->  h_T: (N, 32)
                  ->  Linear(32 => 2)                 ->  logits: (N, 2)
"""

from __future__ import annotations

import argparse
import math
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch
from tqdm import tqdm

import lux_torch as lux

Data = tuple[torch.Tensor, torch.Tensor]
SEQ_LEN = 20
CLASSES = ("clockwise", "anticlockwise")


def make_spirals(key: torch.Tensor, n: int, seq_len: int = SEQ_LEN, noise: float = 0.05) -> Data:
    """``n`` trajectories ``(n, seq_len, 2)`` and labels ``(n,)`` (1 = anticlockwise).

    Every random number comes from ``key``: the labels, the start angle in [0, 2 pi), the
    start radius in [0.3, 1), the angular step in [0.15, 0.45) rad, the radial growth per
    step in [0.01, 0.06) and Gaussian noise of std ``noise`` on every point.
    """
    k_label, k_angle, k_radius, k_speed, k_growth, k_noise = lux.random.split(key, 6)
    y = lux.random.randint(k_label, (n,), 0, 2)
    direction = (2 * y - 1).float()  # -1 clockwise, +1 anticlockwise
    angle0 = lux.random.uniform(k_angle, (n, 1), high=2 * math.pi)
    radius0 = lux.random.uniform(k_radius, (n, 1), low=0.3, high=1.0)
    speed = lux.random.uniform(k_speed, (n, 1), low=0.15, high=0.45)
    growth = lux.random.uniform(k_growth, (n, 1), low=0.01, high=0.06)
    t = torch.arange(seq_len, dtype=torch.float32)
    angle = angle0 + direction[:, None] * speed * t
    radius = radius0 + growth * t
    x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)
    x = x + noise * lux.random.normal(k_noise, x.shape)
    return x, y


def make_model(hidden: int = 32) -> lux.Chain:
    return lux.Chain(
        lux.Recurrence(lux.LSTMCell(2, hidden)),  # (N, T, 2) -> last h: (N, hidden)
        lux.Linear(hidden, 2),
    )


def predict(ts: lux.TrainState, x: torch.Tensor) -> torch.Tensor:
    logits, _ = ts.model(x, ts.params, lux.test_mode(ts.states))
    return logits.argmax(1)


def main(
    epochs: int = 8,
    out: str = "lstm_spirals.png",
    progress: bool = True,
    *,
    n_train: int = 2048,
    n_test: int = 512,
    batch_size: int = 64,
    lr: float = 1e-2,
    seed: int = 0,
) -> float:
    """Train for ``epochs`` epochs, save the figure to ``out``; return the test accuracy."""
    # One thread: the ops are tiny (batch 64, hidden 32), so a second thread gains nothing,
    # and when another process busies the other core, OpenMP spin-waiting made each step
    # about 50x slower (100 s instead of 2 s for two epochs).
    torch.set_num_threads(1)
    model = make_model()
    print(model)
    train_key, test_key, init_key, shuffle_key = lux.random.split(lux.random.key(seed), 4)
    x_train, y_train = make_spirals(train_key, n_train)
    x_test, y_test = make_spirals(test_key, n_test)
    n_batches = n_train // batch_size
    print(
        f"{n_train} training and {n_test} test trajectories of {SEQ_LEN} points, "
        f"{n_batches} batches per epoch"
    )

    ps, st = lux.setup(init_key, model)
    ts = lux.TrainState(model, ps, st, lux.optim.adam(lr))
    loss_fn = lux.losses.CrossEntropyLoss()

    losses: list[float] = []
    accuracies: list[float] = []
    epoch_keys = lux.random.split(shuffle_key, epochs)
    start = time.perf_counter()
    bar = tqdm(total=epochs * n_batches, disable=not progress, desc="lstm", unit="step")
    for epoch in range(epochs):
        perm = lux.random.permutation(epoch_keys[epoch], n_train)
        for i in range(n_batches):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            ts, loss, _ = lux.train_step(loss_fn, (x_train[idx], y_train[idx]), ts)
            losses.append(loss.item())
            bar.update(1)
        accuracies.append((predict(ts, x_test) == y_test).float().mean().item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", test_acc=f"{accuracies[-1]:.3f}")
    bar.close()
    elapsed = time.perf_counter() - start

    predicted = predict(ts, x_test)
    wrong = int((predicted != y_test).sum())
    _plot(out, x_test, y_test, predicted, losses, n_batches)
    print(
        f"final test accuracy {accuracies[-1]:.4f} ({wrong} of {n_test} wrong) after "
        f"{epochs} epochs, {ts.step} steps in {elapsed:.1f} s; figure saved to {out}"
    )
    return accuracies[-1]


def _plot(
    out: str,
    x: torch.Tensor,
    truth: torch.Tensor,
    predicted: torch.Tensor,
    losses: list[float],
    steps_per_epoch: int,
    n_show: int = 12,
) -> None:
    """Left: a grid of test trajectories coloured by predicted class; right: the loss."""
    fig = plt.figure(figsize=(12, 5))
    grid = fig.add_gridspec(3, 7)
    colors = ("tab:blue", "tab:orange")
    for i in range(min(n_show, len(x))):
        ax = fig.add_subplot(grid[i // 4, i % 4])
        xi, t, p = x[i], int(truth[i]), int(predicted[i])
        ax.plot(xi[:, 0], xi[:, 1], "-", color=colors[p], lw=1.5)
        ax.plot(xi[0, 0], xi[0, 1], "o", color=colors[p], ms=4)  # start
        ax.annotate(
            "",
            xy=(float(xi[-1, 0]), float(xi[-1, 1])),
            xytext=(float(xi[-2, 0]), float(xi[-2, 1])),
            arrowprops={"arrowstyle": "->", "color": colors[p], "lw": 1.5},
        )
        mark = "" if t == p else f" (true: {CLASSES[t]})"
        ax.set_title(CLASSES[p] + mark, fontsize=8, color="black" if t == p else "crimson")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xticks([])
        ax.set_yticks([])

    ax_loss = fig.add_subplot(grid[:, 4:])
    steps = torch.arange(1, len(losses) + 1)
    ax_loss.plot(steps, losses, lw=0.8, alpha=0.5, label="per batch")
    window = max(1, steps_per_epoch // 4)
    if len(losses) >= window:
        smooth = torch.tensor(losses).unfold(0, window, 1).mean(1)
        ax_loss.plot(steps[window - 1 :], smooth, lw=1.8, label=f"mean over {window}")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("training step")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_loss.set_title("training loss")
    ax_loss.legend(fontsize=8)
    fig.suptitle("test trajectories coloured by predicted class (dot = start, arrow = end)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8, help="passes over the training set")
    parser.add_argument("--out", default="lstm_spirals.png", help="output PNG")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args()
    main(epochs=args.epochs, out=args.out, progress=not args.no_progress)
