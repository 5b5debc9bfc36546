"""lux_torch.ad: JVP, VJP, batched Jacobians and Hessian-vector products over a layer call,
checked in float64 against torch.autograd.functional (an independent, reverse-mode and
double-backward implementation) on the flattened function."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.autograd import functional as AF

import lux_torch as lux
from lux_torch import ad

F64 = torch.float64


def setup(model: lux.Layer) -> tuple[Any, Any]:
    return lux.setup(lux.random.key(0), model, dtype=F64)


def normal(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def mlp() -> lux.Chain:
    return lux.Chain(lux.Linear(3, 5, activation=torch.tanh), lux.Linear(5, 2))


@pytest.mark.parametrize("name", ["jvp", "vjp"])
def test_products_wrt_x_match_autograd_functional(name: str) -> None:
    """``J v`` (v like x) and ``J^T w`` (w like y) against torch.autograd.functional."""
    model = mlp()
    ps, st = setup(model)
    x = normal(1, 4, 3)
    vector = normal(2, 4, 3) if name == "jvp" else normal(2, 4, 2)
    y, product, new_st = getattr(ad, name)(model, x, ps, st, vector)
    ref_y, ref = getattr(AF, name)(lambda x: model(x, ps, st)[0], x, vector)
    torch.testing.assert_close(y, ref_y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(product, ref, rtol=1e-10, atol=1e-12)
    assert new_st == st
    assert ad.jacobian_vector_product is ad.jvp
    assert ad.vector_jacobian_product is ad.vjp


@pytest.mark.parametrize("name", ["jvp", "vjp"])
def test_products_wrt_ps_match_autograd_functional(name: str) -> None:
    """The same with respect to the parameters, on the flat parameter vector."""
    model = mlp()
    ps, st = setup(model)
    x = normal(1, 4, 3)
    vector = lux.tree.map(lambda t: normal(3, *t.shape), ps) if name == "jvp" else normal(2, 4, 2)
    _, product, _ = getattr(ad, name)(model, x, ps, st, vector, wrt="ps")
    flat, unravel = lux.tree.ravel(ps)
    ref_vector = lux.tree.ravel(vector)[0] if name == "jvp" else vector
    _, ref = getattr(AF, name)(lambda p: model(x, unravel(p), st)[0], flat, ref_vector)
    got = product if name == "jvp" else lux.tree.ravel(product)[0]
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def test_new_state_is_the_calls() -> None:
    """BatchNorm in training mode: the returned state is the call's updated statistics."""
    model = lux.Chain(lux.Linear(3, 4), lux.BatchNorm1d(4))
    ps, st = setup(model)
    x = normal(1, 6, 3)
    _, expected = model(x, ps, st)
    for _, _, new_st in (
        ad.jvp(model, x, ps, st, normal(2, 6, 3)),
        ad.vjp(model, x, ps, st, normal(3, 6, 4)),
    ):
        assert lux.tree.allclose(new_st, expected, rtol=1e-12, atol=1e-14)
        assert not lux.tree.allclose(new_st, st)


def diagonal_blocks(full: torch.Tensor, batch: int, out_dims: int) -> torch.Tensor:
    """The blocks ``d y[b] / d x[b]`` of the whole batch's Jacobian ``(batch, out..., batch,
    in...)``; asserts that the others are zero (the samples are independent)."""
    blocks = torch.stack([full.select(out_dims + 1, b)[b] for b in range(batch)])
    mask = torch.eye(batch, dtype=torch.bool).reshape(
        batch, *[1] * out_dims, batch, *[1] * (full.dim() - out_dims - 2)
    )
    assert torch.all(full.masked_fill(mask, 0.0) == 0)
    return blocks


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_batched_jacobian_is_the_diagonal_blocks(mode: str) -> None:
    """Multi-dimensional samples: Conv1d maps (2, 5) to (3, 3) per sample."""
    model = lux.Chain(lux.Conv1d(2, 3, 3, activation=torch.tanh), lux.Scale((3, 3)))
    ps, st = setup(model)
    x = normal(1, 4, 2, 5)
    jac, new_st = ad.batched_jacobian(model, x, ps, st, mode=mode)  # type: ignore[arg-type]
    full = AF.jacobian(lambda x: model(x, ps, st)[0], x)  # (4, 3, 3, 4, 2, 5)
    assert jac.shape == (4, 3, 3, 2, 5)
    torch.testing.assert_close(jac, diagonal_blocks(full, 4, 2), rtol=1e-10, atol=1e-12)
    assert new_st == st


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_batched_jacobian_wrt_ps(mode: str) -> None:
    model = mlp()
    ps, st = setup(model)
    x = normal(1, 4, 3)
    jac, _ = ad.batched_jacobian(model, x, ps, st, wrt="ps", mode=mode)  # type: ignore[arg-type]
    names, leaves = lux.tree.paths(ps), lux.tree.leaves(ps)

    def f(*tensors: torch.Tensor) -> Any:
        return model(x, lux.tree.unflatten(lux.tree.flatten(ps)[1], tensors), st)[0]

    full = AF.jacobian(f, tuple(leaves))
    for name, got, ref, leaf in zip(names, lux.tree.leaves(jac), full, leaves, strict=True):
        assert got.shape == (4, 2, *leaf.shape), name
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def test_batched_jacobian_refuses_coupled_samples() -> None:
    """BatchNorm in training mode mixes the samples: no silent wrong blocks; test mode is
    per-sample and accepted."""
    model = lux.Chain(lux.Linear(3, 3), lux.BatchNorm1d(3))
    ps, st = setup(model)
    x = normal(1, 5, 3)
    for mode in ("forward", "reverse"):
        with pytest.raises(ValueError, match="samples are not independent"):
            ad.batched_jacobian(model, x, ps, st, mode=mode)
    test_st = lux.test_mode(st)
    jac, _ = ad.batched_jacobian(model, x, ps, test_st)
    full = AF.jacobian(lambda x: model(x, ps, test_st)[0], x)
    torch.testing.assert_close(jac, diagonal_blocks(full, 5, 1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("wrt", ["x", "ps"])
def test_hessian_vector_product(wrt: str) -> None:
    model = mlp()
    ps, st = setup(model)
    x = normal(1, 4, 3)

    def loss(y: torch.Tensor) -> torch.Tensor:
        return (y**2).sum() + y.sin().sum()

    if wrt == "x":
        v = normal(2, 4, 3)
        value, hv, _ = ad.hessian_vector_product(model, x, ps, st, v, loss=loss)
        ref_value, ref = AF.hvp(lambda x: loss(model(x, ps, st)[0]), x, v)
    else:
        v = lux.tree.map(lambda t: normal(3, *t.shape), ps)
        value, hv_tree, _ = ad.hessian_vector_product(model, x, ps, st, v, loss=loss, wrt="ps")
        flat, unravel = lux.tree.ravel(ps)
        ref_value, ref = AF.hvp(
            lambda p: loss(model(x, unravel(p), st)[0]), flat, lux.tree.ravel(v)[0]
        )
        hv = lux.tree.ravel(hv_tree)[0]
    torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hv, ref, rtol=1e-10, atol=1e-12)


def test_hessian_vector_product_of_a_scalar_output() -> None:
    model = lux.Chain(lux.Linear(3, 1, activation=torch.tanh), lux.WrappedFunction(torch.sum))
    ps, st = setup(model)
    x, v = normal(1, 2, 3), normal(2, 2, 3)
    value, hv, _ = ad.hessian_vector_product(model, x, ps, st, v)
    ref_value, ref = AF.hvp(lambda x: model(x, ps, st)[0], x, v)
    torch.testing.assert_close(value, ref_value)
    torch.testing.assert_close(hv, ref, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- errors


def test_bad_arguments_are_refused_with_the_layer_named() -> None:
    model = mlp()
    ps, st = setup(model)
    x = normal(1, 4, 3)
    with pytest.raises(ValueError, match=r"ad.jacobian_vector_product\(Chain.*wrt must be"):
        ad.jvp(model, x, ps, st, x, wrt="params")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"tangent has shape \(4, 2\)"):
        ad.jvp(model, x, ps, st, normal(2, 4, 2))
    with pytest.raises(ValueError, match=r"tangent has shape .* dtype torch.float32"):
        ad.jvp(model, x, ps, st, x.float())
    with pytest.raises(ValueError, match="the structure of ps"):
        ad.jvp(model, x, ps, st, {"layer_1": ps["layer_1"]}, wrt="ps")
    with pytest.raises(ValueError, match=r"cotangent has shape \(4, 3\)"):
        ad.vjp(model, x, ps, st, x)
    with pytest.raises(TypeError, match=r"x.1 is torch.int64 .*wrt='ps'"):
        ad.vjp(lux.Embedding(3, 2), (x, torch.tensor([1])), ps, st, x)
    with pytest.raises(ValueError, match="mode must be"):
        ad.batched_jacobian(model, x, ps, st, mode="both")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="x must be one tensor"):
        ad.batched_jacobian(model, (x,), ps, st)  # type: ignore[arg-type]
    summed = lux.Chain(mlp(), lux.WrappedFunction(torch.sum))
    ps2, st2 = setup(summed)
    with pytest.raises(ValueError, match="batch dimension first"):
        ad.batched_jacobian(summed, x, ps2, st2)
    with pytest.raises(ValueError, match=r"value must be a scalar tensor, got \(4, 2\)"):
        ad.hessian_vector_product(model, x, ps, st, x)


# ----------------------------------------------------------------------------- compile


@pytest.mark.slow
def test_under_torch_compile() -> None:
    """The helpers trace into one graph and match eager (aot_eager: graph capture and
    AOT autograd's functional transforms, without Inductor's C++ compile)."""
    model = mlp()
    ps, st = setup(model)
    x, v = normal(1, 4, 3), normal(2, 4, 3)

    def both(x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        _, jv, _ = ad.jvp(model, x, ps, st, v)
        jac, _ = ad.batched_jacobian(model, x, ps, st)
        _, hv, _ = ad.hessian_vector_product(model, x, ps, st, v, loss=lambda y: (y**3).sum())
        return jv, jac, hv

    compiled = torch.compile(both, fullgraph=True, backend="aot_eager")
    for got, expected in zip(compiled(x, v), both(x, v), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_coupled_samples_are_refused_under_torch_compile() -> None:
    """The independence check runs inside the compiled graph (an assertion)."""
    model = lux.Chain(lux.Linear(3, 3), lux.WrappedFunction(lambda x: x - x.mean(0)))
    ps, st = setup(model)
    compiled = torch.compile(
        lambda x: ad.batched_jacobian(model, x, ps, st)[0], fullgraph=True, backend="aot_eager"
    )
    with pytest.raises(RuntimeError, match="samples are not independent"):
        compiled(normal(1, 5, 3))
