"""models.MLP against a torch.nn.Sequential with torchvision.ops.MLP's layout, written here
(Linear, [norm], activation, Dropout per hidden layer; the output Linear), through the
conformance harness and ``lux.load_state_dict``."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch
from helpers import randn
from torch import nn

import lux_torch as lux
from lux_torch.models import MLP
from lux_torch.testing import check_layer

F64 = torch.float64


def torch_mlp(
    in_dims: int,
    hidden: list[int],
    out_dims: int,
    act: Callable[[], nn.Module] = nn.ReLU,
    norm: Callable[[int], nn.Module] | None = None,
    dropout: float = 0.0,
) -> nn.Sequential:
    """torchvision.ops.MLP(in_dims, hidden + [out_dims], ...) without its final Dropout."""
    layers: list[nn.Module] = []
    fan_in = in_dims
    for width in hidden:
        layers.append(nn.Linear(fan_in, width))
        if norm is not None:
            layers.append(norm(width))
        layers += [act(), nn.Dropout(dropout)]
        fan_in = width
    layers.append(nn.Linear(fan_in, out_dims))
    return nn.Sequential(*layers)


CASES = {
    "plain": (MLP(3, [5, 4], 2), torch_mlp(3, [5, 4], 2)),
    "tanh": (
        MLP(3, [5], 2, activation=torch.tanh),
        torch_mlp(3, [5], 2, act=nn.Tanh),
    ),
    "batchnorm": (
        MLP(3, [5, 4], 2, norm=lux.BatchNorm1d),
        torch_mlp(3, [5, 4], 2, norm=nn.BatchNorm1d),
    ),
    "layernorm": (
        MLP(3, [5], 2, activation=torch.nn.functional.gelu, norm=lux.LayerNorm),
        torch_mlp(3, [5], 2, act=nn.GELU, norm=nn.LayerNorm),
    ),
    "dropout": (MLP(3, [5, 4], 2, dropout=0.25), torch_mlp(3, [5, 4], 2, dropout=0.25)),
    "linear": (MLP(3, [], 2), torch_mlp(3, [], 2)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_mlp_conformance(case):
    layer, reference = CASES[case]
    ps, st = lux.setup(0, layer, dtype=F64)
    report = check_layer(
        layer,
        randn(6, 3, dtype=F64),
        reference=reference,
        ps=ps,
        st=st,
        compile_backend="aot_eager",
    )
    suffixes = ("[train]", "[test]") if case in ("batchnorm", "dropout") else ("",)
    for check in ("parity", "gradcheck", "purity", "determinism", "compile"):
        for suffix in suffixes:
            expected = "passed"
            if case == "dropout" and check == "parity" and suffix == "[train]":
                expected = "skipped"  # stochastic: parity in test mode only
            assert report[check + suffix].startswith(expected), (check + suffix, report)
    assert lux.param_count(layer) == sum(p.numel() for p in reference.parameters())


def test_mlp_loads_a_torchvision_layout_state_dict():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        reference = torch_mlp(4, [8, 8], 3, norm=nn.BatchNorm1d, dropout=0.1).eval()
    model = MLP(4, [8, 8], 3, norm=lux.BatchNorm1d, dropout=0.1)
    ps, st = lux.load_state_dict(model, reference.state_dict())
    x = randn(5, 4)
    y, _ = model(x, ps, lux.test_mode(st))
    torch.testing.assert_close(y, reference(x))
    assert set(reference.state_dict()) < set(lux.state_dict(ps, st))  # plus dropout keys


def test_mlp_display_and_names():
    model = MLP(4, [8], 2, dropout=0.1, norm=lux.LayerNorm)
    text = repr(model)
    assert text.startswith("MLP(\n    4 => [8] => 2,\n    0 = Linear(4 => 8),")
    assert "1 = LayerNorm((8,), relu)" in text and "3 = Dropout(p=0.1)" in text
    assert "4 = Linear(8 => 2)" in text and "# Total: 74 parameters," in text


def test_mlp_configuration_errors():
    with pytest.raises(TypeError, match="hidden_dims must be a sequence"):
        MLP(3, 5, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dropout must be a probability"):
        MLP(3, [5], 2, dropout=1.0)
    with pytest.raises(ValueError, match="hidden_dims entries"):
        MLP(3, [5, 0], 2)
    with pytest.raises(TypeError, match="norm must build a layer with an activation"):
        MLP(3, [5], 2, norm=lambda n: lux.NoOpLayer())
    with pytest.raises(ValueError, match="already has an activation"):
        MLP(3, [5], 2, norm=functools.partial(lux.LayerNorm, activation=torch.tanh))


def test_mlp_wrong_input_names_the_layer():
    model = MLP(3, [5], 2)
    ps, st = lux.setup(0, model)
    with pytest.raises(RuntimeError, match=r"in 0 \(Linear\(3 => 5, relu\)\)"):
        model(randn(4, 2), ps, st)
