"""A bouncing ball: learn gravity and restitution from bounce times, through ODE events.

Run:  python examples/bouncing_ball.py [--out bouncing_ball.png] [--no-progress]
      (about 10 seconds; the PNG goes next to this script unless ``--out`` is given)

torchdiffeq's ``examples/bouncing_ball.py`` rebuilt with lux_torch. A ball of radius ``r``
falls from height 10 (``dpos/dt = vel``, ``dvel/dt = -g``); each time it hits the ground
(the event ``pos - r = 0``) it bounces back, losing a fraction ``absorption`` of its speed.
Every bounce is one event solve of a :class:`lux_torch.NeuralODE` that starts at the
previous bounce's time, given **as data**: ``node((state, {"t0": t0}), ps, st)``, with
``t0`` the previous event time tensor. So gradients flow through the whole chain of
bounces, and they equal torchdiffeq's (``gradient_check`` compares them, both with
backprop through the solver and with the adjoint method).

The example then fits gravity and absorption to observed bounce times
(from a wrong start: g = 7, absorption = 0.4; the truth is 9.8 and 0.2) by Gauss-Newton
steps, whose Jacobian comes from one backward pass per bounce, and writes a PNG
with the observed and fitted trajectories. A dense trajectory between bounces comes from
the same vector field solved on a time grid given with the input (``{"t": tt}``).
"""

from __future__ import annotations

import argparse
import math
import pathlib
import time
from typing import Any

import torch
from tqdm import tqdm

import lux_torch as lux

HERE = pathlib.Path(__file__).resolve().parent
TOL = 1e-8


class Ballistic(lux.Layer):
    """Free fall of the state ``(pos, vel, log_radius)``; ``ps["gravity"]`` of shape (1,)."""

    def init_params(self, key: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"gravity": torch.full((1,), 9.8)}

    def __call__(self, state: Any, ps: Any, st: Any) -> tuple[Any, Any]:
        _pos, vel, log_radius = state
        return (vel, -ps["gravity"].expand_as(vel), torch.zeros_like(log_radius)), st


def hit_ground(t: torch.Tensor, state: Any) -> torch.Tensor:
    """Positive while the ball is in the air, zero when it touches the ground."""
    pos, _, log_radius = state
    return pos - torch.exp(log_radius)


def ball_params(gravity: float = 9.8, absorption: float = 0.2) -> dict[str, torch.Tensor]:
    """The ball's own parameters besides gravity (torchdiffeq's example's defaults)."""
    f64 = torch.float64
    return {
        "t0": torch.zeros(1, dtype=f64),
        "init_pos": torch.full((1,), 10.0, dtype=f64),
        "init_vel": torch.zeros(1, dtype=f64),
        "log_radius": torch.full((1,), math.log(0.2), dtype=f64),
        "absorption": torch.full((1,), absorption, dtype=f64),
    }


def make_node(adjoint: bool = False) -> lux.NeuralODE:
    """One bounce: solve from the call's ``t0`` until the ball hits the ground."""
    return lux.NeuralODE(Ballistic(), event_fn=hit_ground, rtol=TOL, atol=TOL, adjoint=adjoint)


def bounce(state: tuple[torch.Tensor, ...], absorption: torch.Tensor) -> tuple[torch.Tensor, ...]:
    pos, vel, log_radius = state
    # a small lift, so that the next solve does not start on the event
    return pos + 1e-7, -vel * (1 - absorption), log_radius


def collision_times(
    node: lux.NeuralODE, ps: Any, st: Any, ball: dict[str, torch.Tensor], nbounces: int
) -> list[torch.Tensor]:
    """The times of the first ``nbounces`` bounces, each a differentiable tensor."""
    t0 = ball["t0"]
    state = (ball["init_pos"], ball["init_vel"], ball["log_radius"])
    times = []
    for _ in range(nbounces):
        (event_t, solution), st = node((state, {"t0": t0}), ps, st)
        times.append(event_t)
        state = bounce(tuple(s[-1] for s in solution), ball["absorption"])
        t0 = event_t  # the next solve starts at this tensor: gradients flow through it
    return times


def trajectory(
    ps: Any, st: Any, ball: dict[str, torch.Tensor], event_times: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Times and heights on a dense grid between bounces (the grid given with the input)."""
    dense = lux.NeuralODE(Ballistic(), rtol=TOL, atol=TOL)
    t0, state = ball["t0"].reshape(()), (ball["init_pos"], ball["init_vel"], ball["log_radius"])
    times, heights = [t0.reshape(1)], [state[0]]
    for event_t in event_times:
        n = max(int((float(event_t) - float(t0)) * 50), 2)
        tt = torch.cat(
            [torch.linspace(float(t0), float(event_t), n)[:-1].to(t0), event_t.reshape(1)]
        )
        solution, st = dense((state, {"t": tt}), ps, st)
        times.append(tt[1:])
        heights.append(solution[0][1:, 0])
        state = bounce(tuple(s[-1] for s in solution), ball["absorption"])
        t0 = event_t.reshape(())
    return torch.cat(times).detach(), torch.cat(heights).detach()


# --------------------------------------------------------------------------- gradient check


class TorchdiffeqBall(torch.nn.Module):
    """torchdiffeq's ``BouncingBallExample``, as in its examples/bouncing_ball.py."""

    def __init__(self, adjoint: bool = False) -> None:
        super().__init__()
        ball = ball_params()
        self.gravity = torch.nn.Parameter(torch.full((1,), 9.8, dtype=torch.float64))
        for name, value in ball.items():
            setattr(self, name, torch.nn.Parameter(value.clone()))
        import torchdiffeq

        self.tdq = torchdiffeq
        self.odeint = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint

    def forward(self, t: torch.Tensor, state: Any) -> Any:
        _pos, vel, log_radius = state
        return vel, -self.gravity, torch.zeros_like(log_radius)

    def collision_times(self, nbounces: int) -> list[torch.Tensor]:
        t0, state = self.t0, (self.init_pos, self.init_vel, self.log_radius)
        times = []
        for _ in range(nbounces):
            event_t, solution = self.tdq.odeint_event(
                self, state, t0, event_fn=hit_ground, reverse_time=False,
                atol=TOL, rtol=TOL, odeint_interface=self.odeint,
            )  # fmt: skip
            times.append(event_t)
            state = bounce(tuple(s[-1] for s in solution), self.absorption)
            t0 = event_t
        return times


NAMES = ("gravity", "t0", "init_pos", "init_vel", "log_radius", "absorption")


def lux_gradients(nbounces: int, adjoint: bool) -> dict[str, torch.Tensor]:
    """d(last bounce time)/d(each parameter) with lux_torch."""
    node = make_node(adjoint)
    ps, st = lux.setup(0, node, dtype=torch.float64)
    ball = {k: v.requires_grad_(True) for k, v in ball_params().items()}
    ps = lux.tree.map(lambda p: p.requires_grad_(True), ps)
    last = collision_times(node, ps, st, ball, nbounces)[-1]
    leaves = [ps["vector_field"]["gravity"], *(ball[n] for n in NAMES[1:])]
    return dict(zip(NAMES, torch.autograd.grad(last.sum(), leaves), strict=True))


def torchdiffeq_gradients(nbounces: int, adjoint: bool) -> dict[str, torch.Tensor]:
    """The same derivatives from torchdiffeq's own example code."""
    system = TorchdiffeqBall(adjoint)
    last = system.collision_times(nbounces)[-1]
    grads = torch.autograd.grad(last.sum(), [getattr(system, n) for n in NAMES])
    return dict(zip(NAMES, grads, strict=True))


def gradient_check(nbounces: int = 3) -> float:
    """Largest difference between lux_torch's and torchdiffeq's gradients (both modes)."""
    worst = 0.0
    for adjoint in (False, True):
        ours, theirs = lux_gradients(nbounces, adjoint), torchdiffeq_gradients(nbounces, adjoint)
        for name in NAMES:
            worst = max(worst, float((ours[name] - theirs[name]).abs().max()))
        shown = ", ".join(f"d/d{n} {float(ours[n]):+.4f}" for n in ("gravity", "init_vel"))
        print(
            f"adjoint={adjoint}: {shown}  (torchdiffeq: d/dgravity {float(theirs['gravity']):+.4f})"
        )
    print(f"gradient check against torchdiffeq ({nbounces} bounces): max difference {worst:.1e}")
    return worst


# --------------------------------------------------------------------------- fit


def main(
    steps: int = 10, nbounces: int = 4, out: pathlib.Path | None = None, progress: bool = True
) -> dict[str, float]:
    torch.set_num_threads(1)  # scalar solves: extra threads only add sync overhead
    start = time.perf_counter()
    gradient_check()
    node = make_node()
    ps, st = lux.setup(0, node, dtype=torch.float64)
    with torch.no_grad():
        observed = torch.stack(collision_times(node, ps, st, ball_params(), nbounces))
    # A wrong start; fit (gravity, absorption) to the bounce times by Gauss-Newton steps:
    # the Jacobian of the bounce times comes from one backward pass per bounce.
    theta = torch.tensor([7.0, 0.4], dtype=torch.float64)

    def residuals(theta: torch.Tensor) -> torch.Tensor:
        ball = {**ball_params(), "absorption": theta[1:]}
        vf = {"vector_field": {"gravity": theta[:1]}}
        return torch.stack(collision_times(node, vf, st, ball, nbounces)) - observed

    bar = tqdm(range(steps), disable=not progress, desc="Gauss-Newton", unit="step")
    for step in bar:
        theta = theta.detach().requires_grad_(True)
        r = residuals(theta)
        jac = torch.stack([torch.autograd.grad(ri, theta, retain_graph=True)[0] for ri in r])
        damping = 1e-6 * torch.eye(2, dtype=theta.dtype)
        delta = torch.linalg.solve(jac.T @ jac + damping, jac.T @ r.detach())
        theta = theta.detach() - delta
        loss = float((r.detach() ** 2).sum())
        bar.write(  # printed above the bar
            f"step {step}  loss {loss:.3e}  gravity {float(theta[0]):.4f}  "
            f"absorption {float(theta[1]):.4f}"
        )
        if loss < 1e-16:
            break
    bar.close()
    params = {"gravity": theta[:1], "absorption": theta[1:]}
    fitted = {k: float(v) for k, v in params.items()}
    print(
        f"fitted gravity {fitted['gravity']:.3f} (true 9.8), "
        f"absorption {fitted['absorption']:.3f} (true 0.2)"
    )
    _plot(ps, st, params, nbounces, out or HERE / "bouncing_ball.png")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return fitted


def _plot(ps: Any, st: Any, params: Any, nbounces: int, out: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    node = make_node()
    fig, ax = plt.subplots(figsize=(10, 4), dpi=120)
    with torch.no_grad():
        for label, gravity, absorption, style in (
            ("observed (g = 9.8, absorption 0.2)", 9.8, 0.2, "-"),
            (
                f"fitted (g = {float(params['gravity']):.2f}, "
                f"absorption {float(params['absorption']):.2f})",
                float(params["gravity"]),
                float(params["absorption"]),
                "--",
            ),
            ("start (g = 7, absorption 0.4)", 7.0, 0.4, ":"),
        ):
            ball = ball_params(absorption=absorption)
            ps_g = {"vector_field": {"gravity": torch.full((1,), gravity, dtype=torch.float64)}}
            events = collision_times(node, ps_g, st, ball, nbounces)
            tt, height = trajectory(ps_g, st, ball, events)
            ax.plot(tt.numpy(), height.numpy(), style, label=label, linewidth=2)
            color = ax.lines[-1].get_color()
            marks = [float(e) for e in events]
            ax.plot(marks, [0.2] * len(marks), "o", fillstyle="none", color=color)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("time")
    ax.set_ylabel("height")
    ax.set_title("Bouncing ball: event solves chained through differentiable event times")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=None, help="output PNG")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args()
    main(out=args.out, progress=not args.no_progress)
