"""Mixed precision: bfloat16 compute with float32 parameters, via ``torch.autocast``.

Run:  python examples/bf16_autocast.py          (a few seconds on a laptop CPU)

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
and mode flags in ``st`` are untouched.
"""

from __future__ import annotations

import torch

import lux_torch as lux


def main(steps: int = 200, lr: float = 1e-2) -> float:
    """Fit ``y = sin(3x)`` with bfloat16 autocast; return the final float32 test loss."""
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

    for t in range(1, steps + 1):
        grads, (loss, (pred, st)) = torch.func.grad_and_value(loss_fn, has_aux=True)(ps, st)
        updates, opt_state = optimizer.update(grads, opt_state, ps)
        ps = lux.optim.apply_updates(ps, updates)
        if t == 1:
            grad_dtype = lux.tree.leaves(grads)[0].dtype
            param_dtype = lux.tree.leaves(ps)[0].dtype
            print(f"forward output {pred.dtype}, gradients {grad_dtype}, parameters {param_dtype}")
        if t == 1 or t % 50 == 0:
            print(f"step {t:4d}   loss {loss.item():.5f}")

    test_loss = torch.mean((model(x, ps, st)[0] - y) ** 2).item()
    pred16, _ = model(x.bfloat16(), lux.bf16(ps), lux.bf16(st))
    pred64, _ = model(x.double(), lux.f64(ps), lux.f64(st))
    loss16 = torch.mean((pred16.float() - y) ** 2).item()
    loss64 = torch.mean((pred64 - y.double()) ** 2).item()
    print(f"final loss: float32 {test_loss:.5f}")
    print(f"            bfloat16 parameters ({pred16.dtype}) {loss16:.5f}")
    print(f"            float64 parameters ({pred64.dtype}) {loss64:.5f}")
    return test_loss


if __name__ == "__main__":
    main()
