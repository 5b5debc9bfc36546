"""Layers without a class: ``Compact`` and ``@compact``."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import check, randn
from torch import nn

import lux_torch as lux
from lux_torch.core import child_key
from lux_torch.layers.compact import Buffer, Compact, Param, compact


@compact(
    encoder=lux.Linear(2, 16, activation=torch.tanh),
    decoder=lux.Linear(16, 2),
    scale=Param((2,), lux.init.ones),
)
def autoencoder(x: Any, ps: Any, st: Any, layers: Any) -> tuple[Any, Any]:
    h, st_enc = layers.encoder(x, ps["encoder"], st["encoder"])
    y, st_dec = layers["decoder"](h, ps["decoder"], st["decoder"])
    return y * ps["scale"], {**st, "encoder": st_enc, "decoder": st_dec}


class _TorchAutoencoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(2, 16)
        self.decoder = nn.Linear(16, 2)
        self.scale = nn.Parameter(torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.decoder(torch.tanh(self.encoder(x))) * self.scale
        return y


def test_parameters_are_the_childrens_and_the_declared_ones() -> None:
    key = lux.random.key(3)
    ps, st = lux.setup(key, autoencoder)
    assert list(ps) == ["encoder", "decoder", "scale"]
    encoder = lux.init_params(child_key(key, "encoder"), lux.Linear(2, 16))
    assert lux.tree.allclose(ps["encoder"], encoder, rtol=0, atol=0)
    assert torch.equal(ps["scale"], torch.ones(2))
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    y, _ = autoencoder(x, ps, st)
    h = torch.tanh(F.linear(x, ps["encoder"]["weight"], ps["encoder"]["bias"]))
    expected = F.linear(h, ps["decoder"]["weight"], ps["decoder"]["bias"]) * ps["scale"]
    torch.testing.assert_close(y, expected, rtol=0, atol=0)


def test_counts_and_display_come_for_free() -> None:
    assert lux.param_count(autoencoder) == (2 * 16 + 16) + (16 * 2 + 2) + 2
    text = repr(autoencoder)
    assert text.startswith("Compact(\n    autoencoder, scale=Param((2,), ones),\n")
    assert re.search(r"\(own tensors\), +# 2 parameters\n", text)
    assert re.search(r"encoder = Linear\(2 => 16, tanh\), +# 48 parameters\n", text)
    assert "Total: 84 parameters" in text
    ps, st = lux.setup(0, autoencoder)
    s = lux.summary(autoencoder, torch.ones(3, 2), ps, st)
    assert [(r[0], r[3]) for r in s.rows] == [
        ("(model)", 84),
        ("(model) (own)", 2),
        ("encoder", 48),
        ("decoder", 34),
    ]


def test_conformance_against_torch_nn() -> None:
    for dtype in (torch.float32, torch.float64):
        report = check(
            autoencoder,
            randn(4, 2, dtype=dtype),
            dtype,
            reference=_TorchAutoencoder().to(dtype),
            compile_backend="eager",
        )
        assert report["parity"] == report["gradcheck"] == report["vmap"] == "passed"
        if dtype == torch.float32:  # helpers.check compiles in float32 only
            assert report["compile"] == "passed"


def _count(x: Any, ps: Any, st: Any, layers: Any) -> tuple[Any, Any]:
    y, st_drop = layers.drop(x * ps["w"], ps["drop"], st["drop"])
    return y, {"drop": st_drop, "calls": st["calls"] + 1}


def test_buffers_are_state_and_calls_are_pure() -> None:
    model = Compact(
        _count, {"drop": lux.Dropout(0.5)}, {"w": Param((3,), lux.init.ones)}, {"calls": Buffer(())}
    )
    ps, st = lux.setup(0, model)
    assert lux.state_count(model) == 2 + 1  # the dropout's key and the counter
    assert list(st) == ["drop", "calls"] and torch.equal(st["calls"], torch.tensor(0.0))
    x = torch.ones(4, 3)
    y1, st1 = model(x, ps, st)
    assert torch.equal(st["calls"], torch.tensor(0.0))  # the input state is not mutated
    assert torch.equal(st1["calls"], torch.tensor(1.0))
    assert not torch.equal(st1["drop"]["key"], st["drop"]["key"])  # the child's key advanced
    y1_again, _ = model(x, ps, st)
    assert torch.equal(y1, y1_again)  # same inputs, same outputs
    check(model, randn(4, 3), torch.float32, compile_backend="eager")


def test_declared_tensor_shapes_are_checked_per_call() -> None:
    ps, st = lux.setup(0, autoencoder)
    with pytest.raises(ValueError, match=r"ps\['scale'\] has shape \(3,\).*\(2,\)"):
        autoencoder(torch.ones(1, 2), {**ps, "scale": torch.ones(3)}, st)


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"\['a'\] declared more than once"):
        Compact(_count, {"a": lux.Linear(1, 1)}, {"a": Param((1,))})
    with pytest.raises(TypeError, match="expected Param values"):
        Compact(_count, params={"w": torch.ones(1)})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="expected Layer values"):
        Compact(_count, layers={"f": torch.tanh})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="shape must be a tuple"):
        Param(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="declare layers, Param"):
        compact(f=torch.tanh)(_count)  # type: ignore[arg-type]

    @compact(w=Param((2,)))
    def no_state(x: Any, ps: Any, st: Any, layers: Any) -> Any:
        return x * ps["w"]

    ps, st = lux.setup(0, no_state)
    with pytest.raises(TypeError, match=r"must return \(y, new_st\)"):
        no_state(torch.ones(2), ps, st)

    @compact(w=Param((2,)))
    def unknown_child(x: Any, ps: Any, st: Any, layers: Any) -> Any:
        return layers.missing(x, ps, st)

    with pytest.raises(AttributeError, match=r"no child named 'missing'; declared children: \[\]"):
        unknown_child(torch.ones(2), *lux.setup(0, unknown_child))


def test_compact_layers_nest_and_rebuild() -> None:
    model = lux.Chain(autoencoder, lux.Linear(2, 1))
    ps, st = lux.setup(0, model)
    assert lux.param_count(model) == 84 + 3
    assert model(torch.ones(3, 2), ps, st)[0].shape == (3, 1)
    doubled = lux.tree.at(
        lambda m: m.layer_1.params["scale"], model, replace=Param((2,), lux.init.ones)
    )
    assert doubled == model  # equal configuration: equal layers
    other = lux.tree.at("layer_1.encoder", model, replace=lux.Linear(2, 16))
    assert other != model and isinstance(other.layers["layer_1"], Compact)
