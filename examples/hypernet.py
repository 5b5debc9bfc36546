"""A hypernetwork that writes the weights of a CNN, one set per task (Lux's HyperNet tutorial).

Run:  python examples/hypernet.py          (about 5 seconds on one CPU thread)

Lux's tutorial trains one hypernetwork on MNIST and FashionMNIST: an embedding of the task
index goes through an MLP whose output is *all* the weights of a small CNN, unflattened
into the CNN's parameter tree, and the CNN then classifies the images of that task. Here
the two tasks come from scikit-learn's digits (no downloads): task 0 is the digits as they
are, task 1 the same digits transposed (another "dataset" whose filters must differ).

It shows:

- a custom :class:`lux_torch.Layer` holding a child (the CNN) whose parameters it does not
  own but *generates*: ``ps`` holds only the hypernetwork's tensors, and
  ``lux.tree.ravel`` of the CNN's parameter layout (made on the meta device, no memory)
  gives the ``unravel`` that turns the generated vector into the CNN's ``ps``;
- the printout's total counting each parameter once (124,490: the generator's; the CNN's
  lines show the sizes of the tensors it is given);
- one :func:`lux_torch.train_step` objective over batches of either task;
- a PNG of the per-task test accuracy during training.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import torch
from tqdm import tqdm

import lux_torch as lux

HERE = pathlib.Path(__file__).resolve().parent


class HyperNet(lux.Layer):
    """``weight_generator`` maps a task index to every parameter of ``core``.

    **Parameters**: ``weight_generator`` (its own tree). The core's parameters are generated.
    **States**: ``weight_generator`` and ``core`` (their states).
    Input: ``(x, task)`` with ``task`` a 0-dim or ``(1,)`` int64 tensor.
    """

    weight_generator: lux.Layer
    core: lux.Layer

    def init_params(self, key: torch.Tensor) -> dict[str, Any]:
        return {"weight_generator": lux.init_params(key, self.weight_generator)}

    def __call__(self, x: Any, ps: Any, st: Any) -> tuple[torch.Tensor, Any]:
        images, task = x
        generator = self.weight_generator
        flat, gen_st = generator(task.reshape(1), ps["weight_generator"], st["weight_generator"])
        # the core's parameter layout, from the core itself (meta device: no memory)
        _, unravel = lux.tree.ravel(lux.init_params(0, self.core, device="meta"))
        y, core_st = self.core(images, unravel(flat.reshape(-1)), st["core"])
        return y, {"weight_generator": gen_st, "core": core_st}


def make_model() -> HyperNet:
    core = lux.Chain(
        lux.Conv2d(1, 8, 3, padding=1, activation=torch.relu),
        lux.MaxPool2d(2),
        lux.Conv2d(8, 16, 3, padding=1, activation=torch.relu),
        lux.MaxPool2d(2),
        lux.Flatten(),
        lux.Linear(64, 10),
    )
    n = lux.param_count(core)
    generator = lux.Chain(
        lux.Embedding(2, 16),
        lux.Linear(16, 64, activation=torch.tanh),
        lux.Linear(64, n),
    )
    return HyperNet(generator, core)


def load_tasks(seed: int = 0) -> dict[str, Any]:
    """Digits (task 0) and transposed digits (task 1), split 75/25 with one permutation."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = lux.random.permutation(lux.random.key(seed), len(y))
    x, y = x[order], y[order]
    split = int(0.75 * len(y))
    tasks = (x, x.transpose(-1, -2))
    return {
        "train": [(t[:split], y[:split]) for t in tasks],
        "test": [(t[split:], y[split:]) for t in tasks],
    }


def accuracy(
    model: HyperNet, ps: Any, st: Any, data: tuple[torch.Tensor, torch.Tensor], task: int
) -> float:
    st = lux.test_mode(st)
    logits, _ = model((data[0], torch.tensor(task)), ps, st)
    return float((logits.argmax(-1) == data[1]).float().mean())


def main(
    steps: int = 400, batch: int = 64, out: pathlib.Path | None = None, progress: bool = True
) -> list[float]:
    start = time.perf_counter()
    torch.set_num_threads(1)
    data = load_tasks()
    model = make_model()
    print(model)
    ps, st = lux.setup(lux.random.key(0), model)
    # (3e-3 kills the generated ReLU filters in the first steps: the loss sticks at log 10)
    ts = lux.TrainState(model, ps, st, lux.optim.adam(1e-3))
    objective = lux.losses.CrossEntropyLoss()
    key = lux.random.key(1)
    history: list[tuple[int, float, float]] = []
    for step in tqdm(range(steps), disable=not progress, desc="hypernet", unit="step"):
        task = step % 2  # alternate the tasks
        key, sub = lux.random.split(key)
        x, y = data["train"][task]
        idx = lux.random.randint(sub, (batch,), 0, len(y))
        ts, _, _ = lux.train_step(objective, ((x[idx], torch.tensor(task)), y[idx]), ts)
        if step % 50 == 49 or step == steps - 1:
            accs = [accuracy(model, ts.params, ts.states, data["test"][k], k) for k in (0, 1)]
            history.append((step + 1, *accs))
    final = [history[-1][1], history[-1][2]]
    print(f"test accuracy: task 0 (digits) {final[0]:.3f}, task 1 (transposed) {final[1]:.3f}")
    _plot(history, out or HERE / "hypernet.png")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return final


def _plot(history: list[tuple[int, float, float]], out: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h[0] for h in history]
    fig, ax = plt.subplots(figsize=(9, 4), dpi=120)
    ax.plot(steps, [h[1] for h in history], "o-", label="task 0: digits")
    ax.plot(steps, [h[2] for h in history], "s-", label="task 1: transposed digits")
    ax.set_xlabel("training step")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.set_title("One hypernetwork, the weights of a CNN for each task")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
