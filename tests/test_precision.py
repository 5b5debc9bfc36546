"""Precision conversion: f16/bf16/f32/f64 cast floating tensors only, never mutate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from helpers import bn_mlp

import lux_torch as lux
from lux_torch.tree import Static

CONVERTERS: dict[str, tuple[Callable[[Any], Any], torch.dtype, torch.dtype | None]] = {
    # name: (function, real target, complex target or None when complex is left alone)
    "f16": (lux.f16, torch.float16, None),
    "bf16": (lux.bf16, torch.bfloat16, None),
    "f32": (lux.f32, torch.float32, torch.complex64),
    "f64": (lux.f64, torch.float64, torch.complex128),
}


def _mixed_tree() -> dict[str, Any]:
    return {
        "f16": torch.ones(2, dtype=torch.float16),
        "bf16": torch.ones(2, dtype=torch.bfloat16),
        "f32": torch.full((2, 2), 1.5),
        "f64": torch.full((3,), 0.25, dtype=torch.float64),
        "c64": torch.ones(2, dtype=torch.complex64) * (1 + 2j),
        "c128": torch.ones(2, dtype=torch.complex128) * (3 - 1j),
        "key": lux.random.key(7),
        "count": torch.tensor(5),
        "mask": torch.tensor([True, False]),
        "u8": torch.tensor([1, 255], dtype=torch.uint8),
        "training": Static(True),
        "tuple": (torch.zeros(1), [torch.ones(1, dtype=torch.int32)]),
        "python": 0.5,
        "none": None,
    }


@pytest.mark.parametrize("name", sorted(CONVERTERS))
def test_only_floating_tensors_are_cast(name: str) -> None:
    fn, real, complex_ = CONVERTERS[name]
    tree = _mixed_tree()
    dtypes_before = {k: v.dtype for k, v in tree.items() if isinstance(v, torch.Tensor)}
    out = fn(tree)

    for k in ("f16", "bf16", "f32", "f64"):
        assert out[k].dtype == real, k
        assert torch.equal(out[k].double(), tree[k].to(real).double()), k
    for k in ("c64", "c128"):
        assert out[k].dtype == (complex_ or tree[k].dtype), k
        assert torch.equal(out[k].to(torch.complex128), tree[k].to(torch.complex128)), k
    for k in ("key", "count", "mask", "u8"):
        assert out[k] is tree[k], k  # untouched, not even copied
    assert out["training"] == Static(True)
    assert out["tuple"][0].dtype == real and isinstance(out["tuple"], tuple)
    assert out["tuple"][1][0] is tree["tuple"][1][0]
    assert out["python"] == 0.5 and out["none"] is None
    assert list(out) == list(tree)
    # the input was not mutated
    assert out is not tree
    assert {k: v.dtype for k, v in tree.items() if isinstance(v, torch.Tensor)} == dtypes_before


def test_f64_model_runs_in_float64_and_keeps_keys() -> None:
    model = bn_mlp(0.25)
    ps, st = lux.setup(lux.random.key(0), model)
    x = lux.random.normal(lux.random.key(1), (6, 3))
    ps64, st64 = lux.f64(ps), lux.f64(st)

    assert all(t.dtype == torch.float64 for t in lux.tree.leaves(ps64))
    assert st64["layer_2"]["running_mean"].dtype == torch.float64
    assert st64["layer_2"]["num_batches_tracked"].dtype == torch.int64
    assert st64["layer_3"]["key"] is st["layer_3"]["key"]
    assert st64["layer_3"]["training"] == Static(True)
    assert lux.tree.structure(st64) == lux.tree.structure(st)
    # the inputs keep their precision
    assert all(t.dtype == torch.float32 for t in lux.tree.leaves(ps))

    y32, new32 = model(x, ps, st)
    y64, new64 = model(x.double(), ps64, st64)
    assert y64.dtype == torch.float64
    assert new64["layer_2"]["running_var"].dtype == torch.float64
    assert torch.equal(new64["layer_3"]["key"], new32["layer_3"]["key"])  # same dropout mask
    torch.testing.assert_close(y64, y32.double(), rtol=1e-5, atol=1e-6)

    back = lux.f32(ps64)
    assert all(
        torch.equal(a, b) for a, b in zip(lux.tree.leaves(back), lux.tree.leaves(ps), strict=True)
    )


def test_bf16_and_f16_models_run_in_low_precision() -> None:
    model = lux.Chain(lux.Linear(3, 8, activation=torch.tanh), lux.Linear(8, 2))
    ps, st = lux.setup(lux.random.key(0), model)
    x = lux.random.normal(lux.random.key(1), (4, 3))
    y32, _ = model(x, ps, st)
    for fn, dtype in ((lux.bf16, torch.bfloat16), (lux.f16, torch.float16)):
        y, _ = model(x.to(dtype), fn(ps), fn(st))
        assert y.dtype == dtype
        torch.testing.assert_close(y.float(), y32, rtol=0.05, atol=0.05)


def test_conversion_is_differentiable_under_torch_func_grad() -> None:
    model = lux.Chain(lux.Linear(3, 4, activation=torch.tanh), lux.Linear(4, 1))
    ps, st = lux.setup(lux.random.key(0), model)
    x = lux.random.normal(lux.random.key(1), (5, 3), dtype=torch.float64)

    def loss(p: Any) -> torch.Tensor:
        result: torch.Tensor = model(x, lux.f64(p), st)[0].sum()
        return result

    grads = torch.func.grad(loss)(ps)
    assert all(g.dtype == torch.float32 for g in lux.tree.leaves(grads))
    grads64 = torch.func.grad(lambda p: model(x, p, st)[0].sum())(lux.f64(ps))
    for g, g64 in zip(lux.tree.leaves(grads), lux.tree.leaves(grads64), strict=True):
        torch.testing.assert_close(g, g64.float())


def test_optimizer_state_keeps_its_structure() -> None:
    ps, _ = lux.setup(lux.random.key(0), lux.Linear(2, 3))
    state = lux.optim.adam(1e-3).init(ps)
    state64 = lux.f64(state)
    assert lux.tree.structure(state64) == lux.tree.structure(state)
    counts = [t for t in lux.tree.leaves(state64) if not t.is_floating_point()]
    floats = [t for t in lux.tree.leaves(state64) if t.is_floating_point()]
    assert counts and all(t.dtype == torch.int64 for t in counts)
    assert floats and all(t.dtype == torch.float64 for t in floats)
