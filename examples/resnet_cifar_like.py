"""ResNet-20 (He et al. 2016, the CIFAR-10 network) on a CIFAR-shaped task made from digits.

Run:  python examples/resnet_cifar_like.py [--epochs 6] [--out resnet_cifar_like.png]
      (6 epochs, 264 steps of 32 images: 99.2% test accuracy, 94% after the third
      epoch; 520 s on 2 CPU threads of a busy shared machine, about 2 s per step)

The task: scikit-learn's 8x8 handwritten digits (bundled, no download) upsampled to 32x32
and colour-jittered, so every sample is a ``3x32x32`` image like CIFAR-10's: each digit
gets a random colour on a random dark background, a random brightness and a little pixel
noise (all drawn once from ``lux.random`` keys), so colour carries no information about
the label. 80% of the 1797 images train, 20% test.

Shows: ``lux.models.resnet20()`` (option-A shortcuts, 0.27M parameters) trained with
``lux.TrainState`` / ``lux.train_step`` (AdamW with a linear warm-up and cosine decay
from ``lux.optim``); BatchNorm's running
statistics living in ``st`` (``lux.test_mode`` for evaluation); random horizontal shifts as
data augmentation drawn from a key; a tqdm bar; and a PNG of the training loss and the
train/test accuracy per epoch.
"""

from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from tqdm import tqdm

import lux_torch as lux
from lux_torch import models

Data = tuple[torch.Tensor, torch.Tensor]


def make_images(key: torch.Tensor) -> Data:
    """All 1797 digits as colour-jittered ``(N, 3, 32, 32)`` images, normalised per channel.

    Each digit is drawn in a random colour (every channel in ``[0.3, 1]``) on a random dark
    background (every channel in ``[0, 0.3]``), scaled by a random brightness in
    ``[0.6, 1.4]``, plus pixel noise of standard deviation 0.05.
    """
    images, labels = load_digits(return_X_y=True)
    gray = torch.as_tensor(images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    gray = F.interpolate(gray, size=(32, 32), mode="bilinear", align_corners=False)
    n = gray.shape[0]
    k_fg, k_bg, k_bright, k_noise = lux.random.split(key, 4)
    fg = 0.3 + 0.7 * lux.random.uniform(k_fg, (n, 3, 1, 1))
    bg = 0.3 * lux.random.uniform(k_bg, (n, 3, 1, 1))
    brightness = 0.6 + 0.8 * lux.random.uniform(k_bright, (n, 1, 1, 1))
    x = (bg + (fg - bg) * gray) * brightness
    x = x + 0.05 * lux.random.normal(k_noise, x.shape)
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    return x, torch.as_tensor(labels, dtype=torch.int64)


def load_data(key: torch.Tensor, test_fraction: float = 0.2) -> tuple[Data, Data]:
    """The coloured digits, shuffled with ``key`` and split into train and test sets."""
    k_images, k_split = lux.random.split(key)
    x, y = make_images(k_images)
    perm = lux.random.permutation(k_split, x.shape[0])
    n_test = round(test_fraction * x.shape[0])
    test, train = perm[:n_test], perm[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def augment(key: torch.Tensor, x: torch.Tensor, max_shift: int = 2) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels (zero padding), as CIFAR training does."""
    n = x.shape[0]
    padded = F.pad(x, (max_shift,) * 4)
    shifts = lux.random.randint(key, (n, 2), 0, 2 * max_shift + 1)
    rows = shifts[:, 0, None] + torch.arange(x.shape[2])  # (n, H)
    cols = shifts[:, 1, None] + torch.arange(x.shape[3])  # (n, W)
    idx = torch.arange(n)[:, None, None]
    return padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def accuracy(ts: lux.TrainState, x: torch.Tensor, y: torch.Tensor, batch: int = 128) -> float:
    """Accuracy in test mode (running BatchNorm statistics)."""
    st = lux.test_mode(ts.states)
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            logits, _ = ts.model(x[i : i + batch], ts.params, st)
            correct += int((logits.argmax(1) == y[i : i + batch]).sum())
    return correct / x.shape[0]


def main(
    epochs: int = 6,
    out: str = "resnet_cifar_like.png",
    progress: bool = True,
    *,
    batch_size: int = 32,
    lr: float = 3e-3,
    train_limit: int | None = None,
    seed: int = 0,
) -> float:
    """Train ResNet-20 for ``epochs`` epochs (on the first ``train_limit`` training images
    if given), save the figure to ``out``; return the final test accuracy."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    data_key, init_key, shuffle_key = lux.random.split(lux.random.key(seed), 3)
    (x_train, y_train), (x_test, y_test) = load_data(data_key)
    if train_limit is not None:
        x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    model = models.resnet20(num_classes=10)
    print(f"ResNet-20: {lux.param_count(model):,} parameters, {lux.state_count(model):,} states")
    n = x_train.shape[0]
    n_batches = n // batch_size  # drop the last partial batch: fixed shapes
    print(f"{n} training and {x_test.shape[0]} test images of shape {tuple(x_train.shape[1:])}")

    ps, st = lux.setup(init_key, model)
    total = epochs * n_batches
    schedule = lux.optim.warmup_cosine_decay_schedule(0.0, lr, max(1, total // 10), total)
    optimizer = lux.optim.adamw(schedule, weight_decay=5e-4)
    ts = lux.TrainState(model, ps, st, optimizer)
    loss_fn = lux.losses.CrossEntropyLoss()

    losses: list[float] = []
    train_acc: list[float] = []
    test_acc: list[float] = []
    epoch_keys = lux.random.split(shuffle_key, epochs)
    start = time.perf_counter()
    bar = tqdm(total=total, disable=not progress, desc="resnet20", unit="step")
    for epoch in range(epochs):
        k_perm, k_aug = lux.random.split(epoch_keys[epoch])
        perm = lux.random.permutation(k_perm, n)
        x_epoch = augment(k_aug, x_train[perm])
        y_epoch = y_train[perm]
        for i in range(n_batches):
            batch = slice(i * batch_size, (i + 1) * batch_size)
            ts, loss, _ = lux.train_step(loss_fn, (x_epoch[batch], y_epoch[batch]), ts)
            losses.append(loss.item())
            bar.update(1)
        train_acc.append(accuracy(ts, x_train[:256], y_train[:256]))
        test_acc.append(accuracy(ts, x_test, y_test))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", test_acc=f"{test_acc[-1]:.3f}")
    bar.close()
    elapsed = time.perf_counter() - start

    _plot(out, losses, train_acc, test_acc, n_batches)
    print(
        f"final test accuracy {test_acc[-1]:.4f} (train {train_acc[-1]:.4f}) after {epochs} "
        f"epochs, {ts.step} steps in {elapsed:.1f} s; figure saved to {out}"
    )
    return test_acc[-1]


def _plot(
    out: str, losses: list[float], train_acc: list[float], test_acc: list[float], per_epoch: int
) -> None:
    """Training loss per step (and its running mean), accuracies per epoch."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    steps = torch.arange(1, len(losses) + 1)
    ax_loss.plot(steps, losses, lw=0.6, alpha=0.5, label="per step")
    window = max(1, per_epoch // 2)
    smooth = torch.tensor(losses).unfold(0, window, 1).mean(1) if len(losses) >= window else None
    if smooth is not None:
        ax_loss.plot(steps[window - 1 :], smooth, lw=1.5, label=f"mean of {window}")
    ax_loss.set(xlabel="step", ylabel="cross-entropy", title="training loss", yscale="log")
    ax_loss.legend()
    epochs = range(1, len(test_acc) + 1)
    ax_acc.plot(epochs, train_acc, "o-", label="train (256 images)")
    ax_acc.plot(epochs, test_acc, "s-", label="test")
    ax_acc.axhline(0.1, color="gray", ls=":", label="chance")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy (test mode)", ylim=(0, 1.02))
    ax_acc.legend(loc="lower right")
    fig.suptitle("ResNet-20 on coloured 32x32 digits")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6, help="passes over the training set")
    parser.add_argument("--out", default="resnet_cifar_like.png", help="output PNG")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args()
    main(epochs=args.epochs, out=args.out, progress=not args.no_progress)
