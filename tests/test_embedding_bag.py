"""EmbeddingBag against torch.nn.EmbeddingBag (built on the meta device: no global RNG is
drawn; the harness feeds it our weight), through the conformance harness in float32 and
float64 (``helpers.check``: compiled in float32 only, with ``aot_eager`` except one
inductor case). Indices are fixed small tensors; a ``max`` bag never holds two different
rows with equal values (the weight is random), so the gradient is defined everywhere.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import DTYPES, check, randn
from torch import nn

import lux_torch as lux
from lux_torch.core import param_count, setup
from lux_torch.layers.embedding import EmbeddingBag

FLAT = torch.tensor([1, 2, 4, 5, 4, 3, 2, 9])
OFFSETS = torch.tensor([0, 3, 3, 6])  # four bags, the second one empty
GRID = torch.tensor([[1, 2, 4], [5, 0, 9]])


def _weights(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return randn(*shape, dtype=dtype, seed=3).abs() + 0.5


# (layer keyword arguments, input kind, compile backend (None: aot_eager))
CASES: list[tuple[dict[str, Any], str, str | None]] = [
    ({}, "grid", "inductor"),  # mode="mean", bags of equal size
    ({"mode": "sum"}, "flat", None),
    ({"mode": "max"}, "flat", None),
    ({"mode": "max"}, "grid", None),
    ({"mode": "mean", "include_last_offset": True}, "flat_last", None),
    ({"mode": "sum"}, "flat_weights", None),
    ({"mode": "sum"}, "grid_weights", None),
    ({"mode": "sum", "include_last_offset": True}, "options", None),
    ({"mode": "mean", "padding_idx": 4}, "flat", None),
    ({"mode": "max", "padding_idx": -1}, "grid", None),
    ({"mode": "sum"}, "flat_int32", None),
]


def _input(kind: str, dtype: torch.dtype) -> Any:
    if kind == "grid":
        return GRID
    if kind == "flat":
        return (FLAT, OFFSETS)
    if kind == "flat_last":
        return (FLAT, torch.cat([OFFSETS, torch.tensor([8])]))
    if kind == "flat_weights":
        return (FLAT, OFFSETS, _weights((8,), dtype))
    if kind == "grid_weights":
        return (GRID, None, _weights((2, 3), dtype))
    if kind == "options":
        last = torch.cat([OFFSETS, torch.tensor([8])])
        return (FLAT, {"offsets": last, "per_sample_weights": _weights((8,), dtype)})
    assert kind == "flat_int32"
    return (FLAT.int(), OFFSETS.int())


def _case_id(case: Any) -> str:
    kw, kind, backend = case
    return ",".join([f"{k}={v}" for k, v in kw.items()] + [kind] + ([backend] if backend else []))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_embedding_bag_matches_torch(case, dtype):
    kw, kind, backend = case
    layer = EmbeddingBag(10, 3, **kw)
    module = nn.EmbeddingBag(10, 3, **kw, device="meta")
    x = _input(kind, dtype)
    if isinstance(x, tuple) and isinstance(x[-1], dict):  # call options: torch's keywords
        reference: Any = lambda tensors, indices, options: torch.func.functional_call(  # noqa: E731
            module, tensors, (indices,), options
        )
    else:
        reference = module
    report = check(layer, x, dtype, reference=reference, compile_backend=backend or "aot_eager")
    for name in ("parity", "gradcheck", "purity", "determinism", "counts", "repr", "vmap"):
        assert report[name] == "passed", name
    assert report["compile"] == ("passed" if dtype == torch.float32 else "skipped: disabled")


def test_scale_grad_by_freq_matches_torch():
    # the scaled "gradient" is not the derivative (by design, as torch): no gradcheck
    x = (torch.tensor([1, 1, 3, 9, 1, 1]), torch.tensor([0, 3]))
    for mode in ("sum", "mean"):
        ref = nn.EmbeddingBag(10, 3, mode=mode, scale_grad_by_freq=True, device="meta")
        layer = EmbeddingBag(10, 3, mode=mode, scale_grad_by_freq=True)
        report = check(layer, x, torch.float64, reference=ref, gradcheck=False, jvp=SCALED)
        assert report["parity"] == "passed"


# torch's CPU embedding_bag backward divides by the count of another index than the row's
# (indices [1, 2, 2, 4, 5, 5, 5], offsets [0, 2]: row 4 gets 1/2, row 5 gets 3/1), so no
# forward-mode rule can agree with it; forward mode divides by the row's own count, as
# F.embedding's backward does (test_scaled_tangents_follow_the_index_counts)
SCALED = "torch's embedding_bag scale_grad_by_freq backward does not use each row's count"


def test_scaled_tangents_follow_the_index_counts():
    layer = EmbeddingBag(10, 3, mode="sum", scale_grad_by_freq=True)
    ps, st = setup(0, layer, dtype=torch.float64)
    indices, offsets = torch.tensor([1, 2, 2, 4, 5, 5, 5]), torch.tensor([0, 2])
    tangent = torch.ones_like(ps["weight"])
    out: Any = torch.func.jvp(
        lambda w: layer((indices, offsets), {"weight": w}, st)[0], (ps["weight"],), (tangent,)
    )
    jv = out[1]
    # counts: row 1 once, 2 twice, 4 once, 5 three times; bag 0 = rows 1, 2; bag 1 = rows
    # 2, 4, 5, 5, 5: each looked-up row's tangent (ones) divided by its row's count
    expected = torch.tensor([1 + 1 / 2, 1 / 2 + 1 + 3 / 3], dtype=torch.float64)
    expected = expected[:, None].expand(2, 3)
    torch.testing.assert_close(jv, expected)


def test_initial_values_and_padding_row():
    layer = EmbeddingBag(50, 40, padding_idx=-2)
    assert layer.padding_idx == 48 and param_count(layer) == 2000
    ps, st = setup(0, layer)
    weight = ps["weight"]
    assert st == {} and weight.shape == (50, 40)
    assert torch.equal(weight[48], torch.zeros(40))
    others = torch.cat([weight[:48], weight[49:]])
    assert abs(float(others.mean())) < 0.1 and abs(float(others.std()) - 1.0) < 0.05  # N(0, 1)
    custom = EmbeddingBag(4, 2, padding_idx=0, weight_init=lux.init.ones)
    assert torch.equal(setup(0, custom)[0]["weight"][:, 0], torch.tensor([0.0, 1, 1, 1]))


def test_loads_torchs_state_dict_and_equals_it():
    module = nn.EmbeddingBag(10, 3, mode="sum", device="meta")
    layer = EmbeddingBag(10, 3, mode="sum")
    ps, st = setup(0, layer)
    sd = lux.state_dict(ps, st)
    assert {k: v.shape for k, v in sd.items()} == {
        k: v.shape for k, v in module.state_dict().items()
    }
    ps2, _ = lux.load_state_dict(layer, sd)
    assert torch.equal(ps2["weight"], ps["weight"])


def test_configuration_errors_say_why():
    with pytest.raises(ValueError, match=r"EmbeddingBag: sparse=True is not supported: .*sparse"):
        EmbeddingBag(10, 3, sparse=True)
    with pytest.raises(ValueError, match=r"EmbeddingBag: max_norm is not supported: .*in place"):
        EmbeddingBag(10, 3, max_norm=1.0)
    with pytest.raises(ValueError, match="EmbeddingBag: scale_grad_by_freq=True does not go with"):
        EmbeddingBag(10, 3, mode="max", scale_grad_by_freq=True)
    with pytest.raises(ValueError, match="max mode does not support scaling"):  # torch, per call
        nn.EmbeddingBag(10, 3, mode="max", scale_grad_by_freq=True)(GRID)
    with pytest.raises(ValueError, match="EmbeddingBag: mode must be 'sum', 'mean' or 'max'"):
        EmbeddingBag(10, 3, mode="min")
    with pytest.raises(ValueError, match=r"padding_idx must be in \[-10, 10\)"):
        EmbeddingBag(10, 3, padding_idx=10)
    with pytest.raises(TypeError, match="EmbeddingBag: include_last_offset must be a bool"):
        EmbeddingBag(10, 3, include_last_offset=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="EmbeddingBag: num_embeddings must be an int"):
        EmbeddingBag(10.0, 3)  # type: ignore[arg-type]
    assert EmbeddingBag(10, 3, sparse=False) == EmbeddingBag(10, 3)


def test_input_errors_name_the_layer():
    layer = EmbeddingBag(10, 3, mode="mean")
    ps, st = setup(0, layer)
    with pytest.raises(ValueError, match=r"EmbeddingBag: per_sample_weights needs mode='sum'"):
        layer((FLAT, OFFSETS, torch.ones(8)), ps, st)
    with pytest.raises(ValueError, match="EmbeddingBag: unknown call option 'weights'"):
        layer((FLAT, {"weights": torch.ones(8)}), ps, st)
    with pytest.raises(ValueError, match=r"EmbeddingBag: expected indices, \(indices, offsets\)"):
        layer([FLAT], ps, st)
    with pytest.raises(ValueError, match=r"(?s)1-d indices need 1-d offsets"):
        layer(FLAT, ps, st)
    with pytest.raises(
        RuntimeError, match=r"(?s)expected indices in \[0, 10\), got values in \[4, 12\]"
    ):
        layer((FLAT + 3, OFFSETS), ps, st)
    with pytest.raises(ValueError, match=r"(?s)offsets must be None for 2-d indices"):
        layer((GRID, OFFSETS), ps, st)
    with pytest.raises(RuntimeError, match=r"(?s)expected int64 or int32 indices"):
        layer(GRID.float(), ps, st)
    with pytest.raises(ValueError, match=r"(?s)expected per_sample_weights of the shape of"):
        EmbeddingBag(10, 3, mode="sum")((GRID, None, torch.ones(6)), ps, st)
    assert layer.describe_input_error((FLAT, OFFSETS)) is None
    assert layer.describe_input_error((FLAT.int(), OFFSETS)) is None  # mixed dtypes: as torch


def test_repr():
    assert repr(EmbeddingBag(10, 3)).startswith("EmbeddingBag(10 => 3, mode='mean')")
    text = repr(EmbeddingBag(10, 3, mode="sum", padding_idx=1, include_last_offset=True))
    assert "mode='sum'" in text and "padding_idx=1" in text and "include_last_offset=True" in text
    assert "30 parameters" in text
