"""Mixed precision: bfloat16 compute with float32 parameters, via ``torch.autocast``.

Run:  python examples/bf16_autocast.py [--steps 200] [--out bf16_autocast.png] [--no-progress]
      (a few seconds on 2 idle CPU threads)

The parameters ``ps`` stay in float32 (the "master weights"); ``torch.autocast("cpu",
dtype=torch.bfloat16)`` around the forward pass runs the matrix multiplications in
bfloat16, roughly halving their memory traffic. Because a lux_torch forward pass is a pure
function of explicit tensors, autocast composes with ``torch.func.grad`` directly:
gradients come back in float32, with the structure of ``ps``, and the optimizer updates
float32 parameters. The loss is computed in float32 (the prediction is cast back), the
usual recipe for numerically sensitive reductions.

For comparison the example also evaluates the trained model entirely in bfloat16 with
``lux.bf16(ps)`` (pure low precision: parameters converted, not just the compute), and
in float64 with ``lux.f64(ps)``. Both convert floating-point tensors only, so random keys
and mode flags in ``st`` are untouched. A tqdm bar shows the loss; the PNG has the loss
curve and the trained model's error against ``sin(3x)`` in the three precisions.
"""

from __future__ import annotations

import argparse

import torch
from matplotlib.figure import Figure
from tqdm import tqdm

import lux_torch as lux


def main(
    steps: int = 200, lr: float = 1e-2, out: str = "bf16_autocast.png", progress: bool = True
) -> float:
    """Fit ``y = sin(3x)`` with bfloat16 autocast, write the figure to ``out``; return the
    final float32 test loss."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = lux.Chain(
        lux.Linear(1, 64, activation=torch.tanh),
        lux.Linear(64, 64, activation=torch.tanh),
        lux.Linear(64, 1),
    )
    data_key, init_key = lux.random.split(lux.random.key(0))
    x = lux.random.uniform(data_key, (256, 1), low=-1.0, high=1.0)
    y = torch.sin(3 * x)
    ps, st = lux.setup(init_key, model)  # float32 parameters

    optimizer = lux.optim.adam(lr)
    opt_state = optimizer.init(ps)

    def loss_fn(ps, st):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred, st = model(x, ps, st)  # the Linear layers compute in bfloat16
        return torch.mean((pred.float() - y) ** 2), (pred, st)

    losses: list[float] = []
    bar = tqdm(range(1, steps + 1), disable=not progress, desc="bf16_autocast", unit="step")
    for t in bar:
        grads, (loss, (pred, st)) = torch.func.grad_and_value(loss_fn, has_aux=True)(ps, st)
        updates, opt_state = optimizer.update(grads, opt_state, ps)
        ps = lux.optim.apply_updates(ps, updates)
        losses.append(loss.item())
        if t == 1:
            grad_dtype = lux.tree.leaves(grads)[0].dtype
            dtypes = f"gradients {grad_dtype}, parameters {lux.tree.leaves(ps)[0].dtype}"
            bar.write(f"forward output {pred.dtype}, {dtypes}")
        if t == 1 or t % 50 == 0:
            bar.write(f"step {t:4d}   loss {losses[-1]:.5f}")  # printed above the bar
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    bar.close()

    test_loss = torch.mean((model(x, ps, st)[0] - y) ** 2).item()
    pred16, _ = model(x.bfloat16(), lux.bf16(ps), lux.bf16(st))
    pred64, _ = model(x.double(), lux.f64(ps), lux.f64(st))
    loss16 = torch.mean((pred16.float() - y) ** 2).item()
    loss64 = torch.mean((pred64 - y.double()) ** 2).item()
    print(f"final loss: float32 {test_loss:.5f}")
    print(f"            bfloat16 parameters ({pred16.dtype}) {loss16:.5f}")
    print(f"            float64 parameters ({pred64.dtype}) {loss64:.5f}")
    _plot(out, model, ps, st, losses, (x, y))
    print(f"figure written to {out}")
    return test_loss


def _plot(
    out: str,
    model: lux.Layer,
    ps: dict,
    st: dict,
    losses: list[float],
    data: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """The autocast training loss, and the trained model evaluated in three precisions."""
    fig = Figure(figsize=(11, 4))  # Agg canvas, no pyplot state
    ax_loss, ax_fit = fig.subplots(1, 2)
    ax_loss.semilogy(range(1, len(losses) + 1), losses, lw=0.8)
    ax_loss.set(xlabel="step", ylabel="MSE", title="training loss (bfloat16 autocast)")
    grid = torch.linspace(-1, 1, 400).unsqueeze(1)
    truth = torch.sin(3 * grid.double()).squeeze(1)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto, _ = model(grid, ps, st)
        p16, _ = model(grid.bfloat16(), lux.bf16(ps), lux.bf16(st))
        p64, _ = model(grid.double(), lux.f64(ps), lux.f64(st))
    # the three fits overlap on a plot of y: show each one's error against sin(3x)
    for pred, label, style in [
        (auto, "float32 + bf16 autocast", "-"),
        (p16, "bfloat16 parameters", ":"),
        (p64, "float64 parameters", "-"),
    ]:
        err = pred.double().squeeze(1) - truth
        ax_fit.plot(grid.squeeze(1), err, style, lw=1.5, label=label)
    x, _ = data
    ax_fit.plot(x.squeeze(1), torch.zeros_like(x.squeeze(1)), "|", color="gray", label="x data")
    ax_fit.set(xlabel="x", ylabel="prediction - sin(3x)", title="trained model in three precisions")
    ax_fit.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="full-batch steps")
    parser.add_argument("--out", default="bf16_autocast.png", help="output PNG")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args()
    main(steps=args.steps, out=args.out, progress=not args.no_progress)
