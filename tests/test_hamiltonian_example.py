"""The Hamiltonian pendulum example (examples/hamiltonian_pendulum.py) runs, learns and writes
its figure; the Hamiltonian network keeps the true energy better than the plain neural ODE."""

from __future__ import annotations

import pathlib

import pytest
from helpers import assert_png, load_example


@pytest.mark.slow  # about 25 s on 2 CPU threads: 2 x 60 training steps
def test_hamiltonian_pendulum_example(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "pendulum.png"
    errors = load_example("hamiltonian_pendulum").main(
        iters=60, out=png, progress=False, n_trajectories=16, width=32, horizon=30.0
    )
    out = capsys.readouterr().out
    assert "HamiltonianNN(" in out and "ad='autograd'" in out and "figure written to" in out
    # with the default seed after 60 steps: 0.027 against 0.14 (exact energy 0.68)
    assert errors["Hamiltonian NN"] < 0.5 * errors["neural ODE"], errors
    assert errors["Hamiltonian NN"] < 0.05, errors
    assert_png(png)
