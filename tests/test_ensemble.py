"""Tests for lux.Ensemble: members with their own parameters, evaluated with one vmap."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

import lux_torch as lux
from lux_torch.testing import check_layer
from lux_torch.tree import allclose, unstack

F64 = torch.float64


def _mlp() -> lux.Chain:
    return lux.Chain(lux.Linear(2, 8, activation=torch.tanh), lux.Linear(8, 3))


def _reference(n: int) -> Any:
    """The same ensemble as a Python loop of F.linear calls on our tensors."""

    def reference(tensors: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        outs = []
        for i in range(n):
            w1, b1 = tensors["member.layer_1.weight"][i], tensors["member.layer_1.bias"][i]
            w2, b2 = tensors["member.layer_2.weight"][i], tensors["member.layer_2.bias"][i]
            outs.append(F.linear(torch.tanh(F.linear(x[i], w1, b1)), w2, b2))
        return torch.stack(outs)

    return reference


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_ensemble_passes_the_conformance_harness(dtype: torch.dtype) -> None:
    model = lux.Ensemble(_mlp(), 4)
    x = torch.randn(4, 5, 2, dtype=dtype)
    ps, st = lux.setup(0, model, dtype=dtype)
    report = check_layer(model, x, ps=ps, st=st, reference=_reference(4))
    assert set(report.values()) <= {"passed"} | {v for v in report.values() if "CUDA" in v}
    assert report["parity"] == report["vmap"] == report["compile"] == "passed"


def test_members_are_initialised_independently_and_match_a_loop() -> None:
    member, n = _mlp(), 3
    model = lux.Ensemble(member, n, in_dim=None)
    ps, st = lux.setup(0, model)
    assert lux.param_count(model) == n * lux.param_count(member)
    members = unstack(ps["member"])
    assert not torch.equal(members[0]["layer_1"]["weight"], members[1]["layer_1"]["weight"])
    x = torch.randn(6, 2)
    y, _ = model(x, ps, st)
    assert y.shape == (n, 6, 3)
    _, st1 = lux.setup(0, member)
    for i, p in enumerate(members):
        torch.testing.assert_close(y[i], member(x, p, st1)[0])


def test_each_member_gets_its_own_dropout_mask_and_key() -> None:
    model = lux.Ensemble(lux.Dropout(0.5), 3, in_dim=None)
    ps, st = lux.setup(0, model)
    y, new_st = model(torch.ones(1000), ps, st)
    assert not torch.equal(y[0], y[1]) and not torch.equal(y[1], y[2])
    keys = new_st["member"]["key"]
    assert keys.shape == (3, 2) and not torch.equal(keys, st["member"]["key"])
    y_test, _ = model(torch.ones(1000), ps, lux.test_mode(st))
    assert torch.equal(y_test, torch.ones(3, 1000))


def test_wrong_member_dimension_is_a_clear_error() -> None:
    model = lux.Ensemble(lux.Linear(2, 1), 3)
    ps, st = lux.setup(0, model)
    with pytest.raises(ValueError, match=r"expected the 3 members along dim 0 of the input"):
        model(torch.randn(5, 2), ps, st)
    with pytest.raises(ValueError, match="n must be >= 1"):
        lux.Ensemble(lux.Linear(2, 1), 0)
    with pytest.raises(TypeError, match="in_dim must be an int"):
        lux.Ensemble(lux.Linear(2, 1), 2, in_dim="0")  # type: ignore[arg-type]


def test_repr_shows_members_and_the_total() -> None:
    text = repr(lux.Ensemble(lux.Linear(2, 3), 4, in_dim=None))
    assert text.startswith("Ensemble(\n    n=4, in_dim=None,\n    member = Linear(2 => 3)")
    assert "# Total: 36 parameters" in text


def test_training_an_ensemble_equals_training_each_member() -> None:
    member, n = _mlp(), 3
    model = lux.Ensemble(member, n, in_dim=None)
    ps, st = lux.setup(0, model)
    x = torch.randn(16, 2)
    y = torch.randn(n, 16, 3)
    ts = lux.TrainState(model, ps, st, lux.optim.adam(1e-2))
    for _ in range(3):
        # the ensemble's loss is the sum of the members' losses: each gets its own gradient
        ts, _, _ = lux.train_step(lux.losses.MSELoss(reduction="sum"), (x, y), ts)
    _, st1 = lux.setup(0, member)
    for i, p in enumerate(unstack(ps["member"])):
        single = lux.TrainState(member, p, st1, lux.optim.adam(1e-2))
        for _ in range(3):
            single, _, _ = lux.train_step(lux.losses.MSELoss(reduction="sum"), (x, y[i]), single)
        assert allclose(unstack(ts.params["member"])[i], single.params, rtol=1e-5, atol=1e-6)


def test_ensemble_of_neural_odes_solves_every_member_at_once() -> None:
    from lux_torch.ode import NeuralODE

    field = lux.Chain(lux.Linear(2, 16, activation=torch.tanh), lux.Linear(16, 2))
    t = torch.linspace(0.0, 1.0, 5, dtype=F64)
    node = NeuralODE(lux.Ensemble(field, 3), t, rtol=1e-9, atol=1e-11)
    ps, st = lux.setup(0, node, dtype=F64)
    y0 = torch.randn(3, 4, 2, dtype=F64)  # (members, batch, features)
    ys, _ = node(y0, ps, st)
    assert ys.shape == (5, 3, 4, 2)
    single = NeuralODE(field, t, rtol=1e-9, atol=1e-11)
    _, st1 = lux.setup(0, single, dtype=F64)
    for i, p in enumerate(unstack(ps["vector_field"]["member"])):
        expected, _ = single(y0[i], {"vector_field": p}, st1)
        torch.testing.assert_close(ys[:, i], expected, rtol=1e-6, atol=1e-8)
