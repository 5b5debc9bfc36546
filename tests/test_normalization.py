"""Normalization: BatchNorm1d/2d/3d, InstanceNorm1d/2d/3d, GroupNorm, LayerNorm, RMSNorm.

Every configuration goes through the conformance harness with the ``torch.nn`` module built
from the same arguments as its reference, in float32 and float64 and, for layers with a
``training`` flag, in both modes (the harness compares our returned running statistics with
the reference's updated buffers). Parameters and running statistics are set to varied
values first (``_varied``): with torch's initial ``weight = 1, bias = 0, running_mean = 0,
running_var = 1`` a parity check could not tell a layer that ignores them. Compilation is
checked in float32 only (graph capture does not depend on the dtype), with inductor for one
configuration per class and ``aot_eager`` (graph capture and the traced graphs, no code
generation) for the others. Inputs are tiny: gradcheck's cost grows with them.

Then the issue's "must show" items: running statistics equal torch's after training calls
(also the cumulative average, ``momentum=None``) and test mode uses them; BatchNorm inside a
Chain under ``torch.func.grad(has_aux=True)`` equals torch autograd and returns the updated
state; ``torch.func.vmap`` over an ensemble whose members have their own running
statistics equals a loop; construction and input errors.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import pytest
import torch
from helpers import DTYPES, fresh_call, layer_case_id, randn
from torch import nn

import lux_torch as lux
from lux_torch import tree as ltree
from lux_torch.core import param_count, setup, state_count, test_mode, train_mode
from lux_torch.layers import normalization as norm
from lux_torch.testing import check_layer

F32, F64 = torch.float32, torch.float64

# (class name, positional args, keyword args shared by lux and torch.nn, input shape, backend)
CASES = [
    ("BatchNorm1d", (4,), {}, (6, 4), "inductor"),
    ("BatchNorm1d", (4,), {"momentum": None}, (5, 4, 3), None),
    ("BatchNorm1d", (4,), {"affine": False, "track_running_stats": False}, (5, 4), None),
    ("BatchNorm1d", (4,), {"eps": 1e-3, "momentum": 0.3, "affine": False}, (3, 4, 2), None),
    ("BatchNorm2d", (3,), {}, (3, 3, 2, 3), "inductor"),
    ("BatchNorm2d", (3,), {"momentum": None, "affine": False}, (2, 3, 2, 2), None),
    ("BatchNorm2d", (3,), {"track_running_stats": False}, (2, 3, 2, 2), None),
    ("BatchNorm3d", (2,), {}, (2, 2, 2, 2, 2), "inductor"),
    ("BatchNorm3d", (2,), {"momentum": 0.5, "eps": 1e-4}, (2, 2, 1, 2, 3), None),
    ("InstanceNorm1d", (3,), {}, (2, 3, 5), "inductor"),
    ("InstanceNorm1d", (3,), {"affine": True, "track_running_stats": True}, (2, 3, 4), None),
    (
        "InstanceNorm1d",
        (3,),
        {"momentum": 0.3, "affine": True, "track_running_stats": True},
        (3, 5),  # unbatched
        None,
    ),
    (
        "InstanceNorm2d",
        (3,),
        {"affine": True, "track_running_stats": True},
        (2, 3, 3, 2),
        "inductor",
    ),
    ("InstanceNorm2d", (3,), {"eps": 1e-3}, (3, 2, 3), None),  # unbatched
    (
        "InstanceNorm3d",
        (2,),
        {"affine": True, "track_running_stats": True},
        (2, 2, 2, 2, 2),
        "inductor",
    ),
    ("InstanceNorm3d", (2,), {}, (1, 2, 2, 2, 2), None),
    ("GroupNorm", (2, 4), {}, (3, 4, 5), "inductor"),
    ("GroupNorm", (3, 6), {"eps": 1e-3, "affine": False}, (2, 6, 2, 2), None),
    ("GroupNorm", (1, 4), {}, (3, 4), None),
    ("LayerNorm", (4,), {}, (3, 4), "inductor"),
    ("LayerNorm", ((2, 3),), {"bias": False}, (2, 2, 3), None),
    ("LayerNorm", (3,), {"eps": 1e-3, "elementwise_affine": False}, (2, 3), None),
    ("RMSNorm", (4,), {}, (3, 4), "inductor"),
    ("RMSNorm", ((2, 3),), {"eps": 1e-6}, (2, 2, 3), None),
    ("RMSNorm", (3,), {"elementwise_affine": False}, (2, 3), None),
    # torch.nn's keyword-only bias=False: a weight and no bias
    ("BatchNorm1d", (4,), {"bias": False}, (6, 4), None),
    ("BatchNorm2d", (3,), {"bias": False, "momentum": None}, (3, 3, 2, 2), None),
    ("BatchNorm3d", (2,), {"bias": False}, (2, 2, 2, 1, 2), None),
    ("InstanceNorm1d", (3,), {"affine": True, "bias": False}, (2, 3, 4), None),
    (
        "InstanceNorm2d",
        (3,),
        {"affine": True, "track_running_stats": True, "bias": False},
        (2, 3, 2, 3),
        None,
    ),
    ("InstanceNorm3d", (2,), {"affine": True, "bias": False}, (2, 2, 2, 2, 2), None),
    ("GroupNorm", (2, 4), {"bias": False}, (3, 4, 5), None),
]


def _varied(layer, dtype, seed=10):
    """``(ps, st)`` in ``dtype`` with non-trivial parameters and running statistics."""
    ps, st = setup(0, layer, dtype=dtype)
    ps = {
        k: (1 + 0.5 * randn(*t.shape, dtype=dtype, seed=seed + i))
        if k == "weight"
        else 0.5 * randn(*t.shape, dtype=dtype, seed=seed + i)
        for i, (k, t) in enumerate(ps.items())
    }
    if "running_mean" in st:
        shape = st["running_mean"].shape
        st = {
            **st,
            "running_mean": 0.5 * randn(*shape, dtype=dtype, seed=seed + 7),
            "running_var": 0.5 + randn(*shape, dtype=dtype, seed=seed + 8).abs(),
            "num_batches_tracked": torch.tensor(3),
        }
    return ps, st


def _suffixes(st) -> tuple[str, ...]:
    return ("[train]", "[test]") if "training" in st else ("",)


# --------------------------------------------------------------------------- conformance


def _report(
    layer: Any, reference: nn.Module, shape: tuple[int, ...], dtype: torch.dtype, **options: Any
) -> tuple[dict[str, str], Any, Any]:
    """The harness's report on ``layer`` (varied ``ps`` and ``st``) against ``reference``,
    compiled in float32 (``aot_eager`` unless ``options`` say otherwise), and the trees."""
    ps, st = _varied(layer, dtype)
    options.setdefault("compile_backend", "aot_eager")
    report = check_layer(
        layer,
        randn(*shape, dtype=dtype),
        ps=ps,
        st=st,
        reference=reference,
        compile=dtype == F32,
        **options,
    )
    return report, ps, st


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=layer_case_id)
def test_normalization_matches_torch(case, dtype):
    name, args, kw, shape, backend = case
    layer = getattr(norm, name)(*args, **kw)
    # the reference lives on the meta device: the harness swaps our tensors in
    reference = getattr(nn, name)(*args, **kw, device="meta")
    report, ps, st = _report(layer, reference, shape, dtype, compile_backend=backend or "aot_eager")
    stateless = not ltree.leaves(ps) and not ltree.leaves(st)  # nothing to vmap over
    for suffix in _suffixes(st):
        for check in ("parity", "gradcheck", "purity", "determinism"):
            assert report[check + suffix] == "passed", check + suffix
        assert report["vmap" + suffix].startswith("skipped" if stateless else "passed")
        assert report["compile" + suffix] == ("passed" if dtype == F32 else "skipped: disabled")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("name", "args", "kw", "shape"),
    [
        ("BatchNorm2d", (3,), {}, (3, 3, 2, 2)),
        ("InstanceNorm1d", (3,), {"affine": True, "track_running_stats": True}, (2, 3, 4)),
        ("GroupNorm", (2, 4), {}, (2, 4, 3)),
        ("LayerNorm", (4,), {}, (3, 4)),
        ("RMSNorm", (4,), {}, (3, 4)),
    ],
)
def test_normalization_with_activation_matches_torch(name, args, kw, shape, dtype):
    layer = getattr(norm, name)(*args, **kw, activation=torch.tanh)
    reference = nn.Sequential(getattr(nn, name)(*args, **kw, device="meta"), nn.Tanh())
    report, _, st = _report(layer, reference, shape, dtype, rename=lambda n: f"0.{n}")
    for suffix in _suffixes(st):
        assert report["parity" + suffix] == "passed"
        assert report["gradcheck" + suffix] == "passed"


# --------------------------------------------------------------------------- running statistics


M = TypeVar("M", bound=nn.Module)


def _torch_twin(module: M, ps, st) -> M:
    """``module`` (built on the meta device) holding clones of our tensors."""
    sd = {k: v.detach().clone() for k, v in lux.state_dict(ps, st).items()}
    module.load_state_dict(sd, assign=True)
    return module


def _close(actual, expected, dtype=F32):
    rtol, atol = (1e-5, 1e-6) if dtype == F32 else (1e-12, 1e-13)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    ("name", "kw", "shape"),
    [
        ("BatchNorm1d", {"momentum": 0.2}, (5, 3)),
        ("BatchNorm2d", {"momentum": 0.2}, (4, 3, 2, 2)),
        ("BatchNorm3d", {}, (2, 3, 2, 1, 2)),
        ("InstanceNorm2d", {"affine": True, "track_running_stats": True}, (4, 3, 2, 2)),
        ("InstanceNorm1d", {"track_running_stats": True, "momentum": 0.4}, (3, 4)),  # unbatched
    ],
)
def test_running_statistics_equal_torch_and_test_mode_uses_them(name, kw, shape):
    layer = getattr(norm, name)(3, **kw)
    ps, st = setup(0, layer)
    ref = _torch_twin(getattr(nn, name)(3, **kw, device="meta"), ps, st)
    before = ltree.map(torch.clone, st)
    x = randn(*shape, seed=2) * 3 + 1
    y, new_st = layer(x, ps, st)
    ref.train()
    _close(y, ref(x))
    for buffer in ("running_mean", "running_var", "num_batches_tracked"):
        _close(new_st[buffer], getattr(ref, buffer))
    assert not torch.equal(new_st["running_mean"], st["running_mean"])  # updated, not stale
    counted = 0 if name.startswith("Instance") else 1  # torch: InstanceNorm never counts
    assert new_st["num_batches_tracked"].item() == counted
    assert ltree.allclose(st, before, rtol=0, atol=0)  # the given state is untouched
    assert new_st["training"] == ltree.Static(True)
    # test mode normalises with the running statistics and leaves them as they are
    x2 = randn(*shape, seed=3)
    y2, st2 = layer(x2, ps, test_mode(new_st))
    ref.eval()
    _close(y2, ref(x2))
    assert ltree.allclose(st2, test_mode(new_st), rtol=0, atol=0)
    mean, var = new_st["running_mean"], new_st["running_var"]
    if name.startswith("Batch"):
        view = (1, 3) + (1,) * (x2.ndim - 2)
        expected = (x2 - mean.view(view)) / torch.sqrt(var.view(view) + 1e-5)
        _close(y2, expected)


def test_cumulative_moving_average_over_three_calls_equals_torch():
    layer = norm.BatchNorm2d(3, momentum=None)
    ps, st = setup(0, layer)
    ref = _torch_twin(nn.BatchNorm2d(3, momentum=None, device="meta"), ps, st).train()
    batches = [randn(4, 3, 2, 2, seed=s) * s + s for s in (1, 2, 3)]
    assert ref.num_batches_tracked is not None
    for i, x in enumerate(batches, 1):
        y, st = layer(x, ps, st)
        _close(y, ref(x))
        _close(st["running_mean"], ref.running_mean)
        _close(st["running_var"], ref.running_var)
        assert st["num_batches_tracked"].item() == i == ref.num_batches_tracked.item()
    # the cumulative average from the start: the plain mean of the batch statistics
    _close(st["running_mean"], torch.stack([x.mean((0, 2, 3)) for x in batches]).mean(0))
    unbiased = torch.stack([x.transpose(0, 1).reshape(3, -1).var(1) for x in batches])
    _close(st["running_var"], unbiased.mean(0))


@pytest.mark.parametrize("momentum", [0.3, None])
@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("BatchNorm1d", (0, 3)),
        ("BatchNorm1d", (0, 3, 4)),
        ("BatchNorm1d", (2, 3, 0)),  # no positions: no values per channel either
        ("BatchNorm2d", (0, 3, 2, 2)),
        ("BatchNorm3d", (0, 3, 1, 2, 2)),
    ],
)
def test_empty_batch_in_training_mode_only_counts_as_torch(name, shape, momentum):
    """torch leaves the running statistics of an empty batch as they are and only
    increments ``num_batches_tracked`` (also for the cumulative average)."""
    layer = getattr(norm, name)(3, momentum=momentum)
    ps, st = _varied(layer, F32)
    ref = _torch_twin(getattr(nn, name)(3, momentum=momentum, device="meta"), ps, st).train()
    x = randn(*shape, seed=3)
    y, new_st = layer(x, ps, st)
    expected = ref(x)
    assert y.shape == expected.shape == x.shape
    for buffer in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(new_st[buffer], getattr(ref, buffer)), buffer
    assert torch.equal(new_st["running_mean"], st["running_mean"])
    assert torch.equal(new_st["running_var"], st["running_var"])
    assert new_st["num_batches_tracked"].item() == 4
    # the batch size is a static shape: one graph, no break, same state
    compiled = torch.compile(fresh_call(layer), fullgraph=True, backend="aot_eager", dynamic=False)
    assert ltree.allclose(compiled(x, ps, st)[1], new_st, rtol=0, atol=0)
    # a later non-empty batch continues exactly as in torch
    x2 = randn(4, *shape[1:2], *(s or 2 for s in shape[2:]), seed=4)
    _, st2 = layer(x2, ps, new_st)
    ref(x2)
    _close(st2["running_mean"], ref.running_mean)
    _close(st2["running_var"], ref.running_var)


def test_empty_batch_under_vmap_over_an_ensemble():
    layer = norm.BatchNorm2d(3)
    members = [_varied(layer, F32, seed=s) for s in (10, 20)]
    ps = ltree.stack([p for p, _ in members])
    st = ltree.stack([s for _, s in members])
    x = randn(0, 3, 2, 2)
    y, new_st = torch.func.vmap(layer.__call__, in_dims=(None, 0, 0))(x, ps, st)
    assert y.shape == (2, 0, 3, 2, 2)
    assert torch.equal(new_st["running_mean"], st["running_mean"])
    assert torch.equal(new_st["running_var"], st["running_var"])
    assert new_st["num_batches_tracked"].tolist() == [4, 4]


def test_without_running_statistics_both_modes_use_the_batch():
    layer = norm.BatchNorm1d(3, track_running_stats=False)
    ps, st = setup(0, layer)
    assert set(st) == {"training"}
    x = randn(6, 3)
    y_train, st_train = layer(x, ps, st)
    y_test, st_test = layer(x, ps, test_mode(st))
    assert torch.equal(y_train, y_test) and st_train is st and st_test == test_mode(st)
    _close(y_train, (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5))


def test_state_dicts_carry_over_in_both_directions():
    # torch -> lux: a module trained for a step, loaded strictly into (ps, st)
    ref = nn.BatchNorm2d(3, momentum=0.3, device="meta")
    layer = norm.BatchNorm2d(3, momentum=0.3)
    ref = _torch_twin(ref, *_varied(layer, F32)).train()
    ref(randn(4, 3, 2, 2, seed=5))
    ps, st = lux.load_state_dict(layer, ref.state_dict())
    x = randn(2, 3, 2, 2, seed=6)
    _close(layer(x, ps, test_mode(st))[0], ref.eval()(x))
    # lux -> torch: every name of a tracked InstanceNorm, num_batches_tracked included
    inst = norm.InstanceNorm1d(3, affine=True, track_running_stats=True)
    ps, st = _varied(inst, F32)
    twin = nn.InstanceNorm1d(3, affine=True, track_running_stats=True)
    twin.load_state_dict(lux.state_dict(ps, st))  # strict
    x = randn(2, 3, 4, seed=7)
    _close(inst(x, ps, test_mode(st))[0], twin.eval()(x))


BIAS_FALSE = [
    ("BatchNorm1d", (3,), {}, (5, 3)),
    ("BatchNorm2d", (3,), {}, (4, 3, 2, 2)),
    ("BatchNorm3d", (3,), {}, (2, 3, 2, 1, 2)),
    ("InstanceNorm1d", (3,), {"affine": True}, (2, 3, 4)),
    ("InstanceNorm2d", (3,), {"affine": True, "track_running_stats": True}, (2, 3, 2, 2)),
    ("InstanceNorm3d", (3,), {"affine": True}, (2, 3, 2, 2, 2)),
    ("GroupNorm", (1, 3), {}, (2, 3, 4)),
    ("LayerNorm", (3,), {}, (2, 3)),
]


@pytest.mark.parametrize(("name", "args", "kw", "shape"), BIAS_FALSE)
def test_bias_false_state_dicts_round_trip_with_torch(name, args, kw, shape):
    """torch.nn's ``bias=False`` (a weight, no bias): torch's state_dict loads strictly and
    ours loads into torch strictly; both compute the same in both modes."""
    layer = getattr(norm, name)(*args, **kw, bias=False)
    ref = getattr(nn, name)(*args, **kw, bias=False)
    with torch.no_grad():
        ref.weight.copy_(1 + 0.5 * randn(*ref.weight.shape, seed=4))
    assert ref.bias is None
    ps, st = lux.load_state_dict(layer, ref.state_dict())  # strict: same names, same shapes
    assert set(ps) == {"weight"} and param_count(layer) == ref.weight.numel()
    x = randn(*shape, seed=5)
    y, new_st = layer(x, ps, st)
    _close(y, ref.train()(x))
    _close(layer(x, ps, test_mode(new_st))[0], ref.eval()(x))
    twin = getattr(nn, name)(*args, **kw, bias=False)
    twin.load_state_dict(lux.state_dict(ps, new_st))  # strict
    assert torch.equal(twin.weight, ps["weight"])
    # the bias=True default still has a bias; the two configurations differ
    assert set(setup(0, getattr(norm, name)(*args, **kw))[0]) == {"weight", "bias"}
    assert layer != getattr(norm, name)(*args, **kw)


# --------------------------------------------------------------------------- grad and vmap


def test_batchnorm_in_a_chain_under_func_grad_equals_torch_autograd():
    dtype = F64
    model = lux.Chain(lux.Linear(3, 5), norm.BatchNorm1d(5), torch.tanh, lux.Linear(5, 2))
    ps, st = setup(0, model, dtype=dtype)
    before = ltree.map(torch.clone, st)
    x, target = randn(6, 3, dtype=dtype, seed=1), randn(6, 2, dtype=dtype, seed=2)

    def loss(p):
        y, new_st = model(x, p, st)
        return ((y - target) ** 2).mean(), new_st

    grads, new_st = torch.func.grad(loss, has_aux=True)(ps)

    sequential = nn.Sequential(
        nn.Linear(3, 5, device="meta"),
        nn.BatchNorm1d(5, device="meta"),
        nn.Tanh(),
        nn.Linear(5, 2, device="meta"),
    )

    def torch_name(name: str) -> str:  # layer_2.running_mean -> 1.running_mean
        head, _, rest = name.partition(".")
        return f"{int(head.removeprefix('layer_')) - 1}.{rest}"

    flat = lux.state_dict(ps, st)
    sequential.load_state_dict(
        {torch_name(n): t.detach().clone() for n, t in flat.items()}, assign=True
    )
    sequential.train()
    torch_loss = ((sequential(x) - target) ** 2).mean()
    torch_loss.backward()

    _close(loss(ps)[0], torch_loss.detach(), dtype)
    flat_grads = dict(zip(ltree.paths(grads), ltree.leaves(grads), strict=True))
    assert set(flat_grads) == {
        f"{layer}.{p}" for layer in ("layer_1", "layer_2", "layer_4") for p in ("weight", "bias")
    }
    for name, g in flat_grads.items():
        _close(g, sequential.get_parameter(torch_name(name)).grad, dtype)
    bn = sequential[1]
    assert isinstance(bn, nn.BatchNorm1d) and bn.num_batches_tracked is not None
    _close(new_st["layer_2"]["running_mean"], bn.running_mean, dtype)
    _close(new_st["layer_2"]["running_var"], bn.running_var, dtype)
    assert new_st["layer_2"]["num_batches_tracked"].item() == 1 == bn.num_batches_tracked.item()
    assert ltree.allclose(st, before, rtol=0, atol=0)  # the given state is untouched
    assert st["layer_2"]["num_batches_tracked"].item() == 0


@pytest.mark.parametrize(
    "layer",
    [
        norm.BatchNorm1d(4),
        norm.BatchNorm1d(4, momentum=None),  # each member's own count sets its factor
        norm.InstanceNorm1d(4, affine=True, track_running_stats=True),
    ],
    ids=repr,
)
@pytest.mark.parametrize("training", [True, False])
def test_vmap_over_an_ensemble_keeps_per_member_running_statistics(layer, training):
    members = []
    for i in range(3):
        ps, st = _varied(layer, F32, seed=10 * i)
        st = {**st, "num_batches_tracked": torch.tensor(i + 1)}
        members.append((ps, train_mode(st) if training else test_mode(st)))
    shape = (5, 4) if isinstance(layer, norm.BatchNorm1d) else (5, 4, 3)
    xs = torch.stack([randn(*shape, seed=s) * (s + 1) for s in range(3)])
    stacked_ps = ltree.stack([ps for ps, _ in members])
    stacked_st = ltree.stack([st for _, st in members])
    before = ltree.map(torch.clone, stacked_st)

    y, new_st = torch.func.vmap(lambda p, s, x: layer(x, p, s))(stacked_ps, stacked_st, xs)

    looped = [layer(x, ps, st) for x, (ps, st) in zip(xs, members, strict=True)]
    _close(y, torch.stack([out for out, _ in looped]))
    assert ltree.structure(new_st) == ltree.structure(stacked_st)
    for i, (_, member_st) in enumerate(looped):
        for k in ("running_mean", "running_var", "num_batches_tracked"):
            _close(new_st[k][i], member_st[k])
    assert ltree.allclose(stacked_st, before, rtol=0, atol=0)
    # and each member equals its own torch module
    name = type(layer).__name__
    for i, (ps, st) in enumerate(members):
        twin = getattr(nn, name)(4, **_torch_kwargs(layer), device="meta")
        twin = _torch_twin(twin, ps, st).train(training)
        _close(y[i], twin(xs[i]))
        _close(new_st["running_mean"][i], twin.running_mean)
        _close(new_st["running_var"][i], twin.running_var)
    if training and isinstance(layer, norm.BatchNorm1d):
        assert new_st["num_batches_tracked"].tolist() == [2, 3, 4]
        means = new_st["running_mean"]
        assert not torch.allclose(means[0], means[1])  # every member has its own


@pytest.mark.parametrize(
    "layer",
    [norm.BatchNorm2d(3), norm.InstanceNorm2d(3, track_running_stats=True)],
    ids=repr,
)
def test_vmap_over_batches_with_one_shared_state(layer):
    # in_dims=None for ps and st, batched x: plain torch.func refuses this for
    # nn.BatchNorm ("running_mean ... not batched", pytorch issue 85533)
    ps, st = _varied(layer, F32)
    xs = torch.stack([randn(4, 3, 2, 2, seed=s) + s for s in range(3)])
    y, new_st = torch.func.vmap(lambda x: layer(x, ps, st))(xs)
    for i, x in enumerate(xs):
        y_i, st_i = layer(x, ps, st)
        _close(y[i], y_i)
        _close(new_st["running_mean"][i], st_i["running_mean"])
        _close(new_st["running_var"][i], st_i["running_var"])
    assert not torch.allclose(new_st["running_mean"][0], new_st["running_mean"][1])
    module = getattr(nn, type(layer).__name__)(3, **_torch_kwargs(layer))
    with pytest.raises(RuntimeError, match="not batched"):  # what torch.func alone does
        torch.func.vmap(module)(xs)


def _torch_kwargs(layer) -> dict:
    return {
        "eps": layer.eps,
        "momentum": layer.momentum,
        "affine": layer.affine,
        "track_running_stats": layer.track_running_stats,
    }


def test_compiled_training_step_with_batchnorm_matches_eager():
    model = lux.Chain(lux.Linear(3, 4), norm.BatchNorm1d(4, momentum=None), torch.tanh)
    ps, st = setup(0, model)
    x = randn(5, 3)

    def step(p, s):
        def loss(q):
            y, new_s = model(x, q, s)
            return (y**2).sum(), new_s

        return torch.func.grad(loss, has_aux=True)(p)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    eager = step(ps, st)
    got = compiled(ps, st)
    assert ltree.allclose(got, eager, rtol=1e-5, atol=1e-6)
    assert got[1]["layer_2"]["num_batches_tracked"].item() == 1


# --------------------------------------------------------------------------- configuration


def test_state_layout_counts_and_printouts():
    bn = norm.BatchNorm2d(16)
    ps, st = setup(0, bn)
    assert {k: v.shape for k, v in ps.items()} == {"weight": (16,), "bias": (16,)}
    assert list(st) == ["running_mean", "running_var", "num_batches_tracked", "training"]
    assert st["num_batches_tracked"].dtype == torch.int64 and st["num_batches_tracked"].ndim == 0
    assert torch.equal(ps["weight"], torch.ones(16)) and torch.equal(ps["bias"], torch.zeros(16))
    assert torch.equal(st["running_var"], torch.ones(16))
    assert param_count(bn) == 32 and state_count(bn) == 33
    ps64, st64 = setup(0, bn, dtype=F64)
    assert ps64["weight"].dtype == F64 and st64["running_mean"].dtype == F64
    assert st64["num_batches_tracked"].dtype == torch.int64
    assert repr(bn) == "BatchNorm2d(16)  # 32 parameters, plus 33 states"
    assert (
        repr(norm.BatchNorm1d(4, 1e-3, None, False, False, activation=torch.relu))
        == "BatchNorm1d(4, relu, eps=0.001, momentum=None, affine=False, "
        "track_running_stats=False)  # 0 parameters"
    )
    assert repr(norm.InstanceNorm2d(3)) == "InstanceNorm2d(3)  # 0 parameters"
    assert repr(norm.InstanceNorm3d(3, affine=True)) == (
        "InstanceNorm3d(3, affine=True)  # 6 parameters"
    )
    assert repr(norm.GroupNorm(2, 4, activation=torch.tanh)) == (
        "GroupNorm(2, 4, tanh)  # 8 parameters"
    )
    assert (
        repr(norm.LayerNorm((2, 3), bias=False)) == "LayerNorm((2, 3), bias=False)  # 6 parameters"
    )
    assert repr(norm.RMSNorm(4, eps=1e-6)) == "RMSNorm((4,), eps=1e-06)  # 4 parameters"
    model = lux.Chain(lux.Linear(2, 4), norm.BatchNorm1d(4, activation=torch.relu))
    assert "layer_2 = BatchNorm1d(4, relu)," in repr(model)
    # stateless layers and layers without affine parameters
    assert setup(0, norm.GroupNorm(2, 4, affine=False)) == ({}, {})
    assert setup(0, norm.InstanceNorm1d(3))[1] == {"training": ltree.Static(True)}
    assert set(setup(0, norm.LayerNorm(3, bias=False))[0]) == {"weight"}
    assert (
        repr(norm.BatchNorm2d(4, bias=False))
        == "BatchNorm2d(4, bias=False)  # 4 parameters, plus 9 states"
    )
    assert repr(norm.GroupNorm(2, 4, bias=False)) == "GroupNorm(2, 4, bias=False)  # 4 parameters"
    # bias only matters with affine parameters (torch ignores it without them)
    assert setup(0, norm.BatchNorm1d(3, affine=False, bias=False))[0] == {}


def test_layers_are_immutable_normalised_and_compare_by_configuration():
    layer = norm.LayerNorm([2, 3], eps=1)
    assert layer.normalized_shape == (2, 3) and layer.eps == 1.0
    assert layer == norm.LayerNorm((2, 3), 1.0) and hash(layer) == hash(norm.LayerNorm((2, 3), 1.0))
    assert norm.BatchNorm2d(3) != norm.BatchNorm1d(3) != norm.InstanceNorm1d(3)
    assert norm.RMSNorm(torch.Size([4])).normalized_shape == (4,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.eps = 2.0  # type: ignore[misc]
    assert dataclasses.replace(norm.BatchNorm2d(3), momentum=0.5).momentum == 0.5
    # torch.nn's positional order; activation is keyword-only
    assert norm.InstanceNorm1d(3, 1e-3, 0.2, True, True).track_running_stats
    with pytest.raises(TypeError):
        norm.BatchNorm2d(3, 1e-5, 0.1, True, True, torch.relu)  # type: ignore[arg-type, call-arg]


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: norm.BatchNorm2d(0), ValueError, r"BatchNorm2d: num_features must be >= 1, got 0"),
        (lambda: norm.BatchNorm1d(-3), ValueError, r"BatchNorm1d: num_features must be >= 1"),
        (lambda: norm.BatchNorm3d(3.0), TypeError, r"BatchNorm3d: num_features must be an int"),  # type: ignore[arg-type]
        (lambda: norm.BatchNorm2d(True), TypeError, r"BatchNorm2d: num_features must be an int"),
        (
            lambda: norm.BatchNorm2d(3, eps=0),
            ValueError,
            r"BatchNorm2d: eps must be a positive finite float, got 0",
        ),
        (lambda: norm.LayerNorm(3, eps=-1e-5), ValueError, r"LayerNorm: eps must be a positive"),
        (lambda: norm.GroupNorm(1, 3, eps="1e-5"), TypeError, r"GroupNorm: eps must be a float"),  # type: ignore[arg-type]
        (lambda: norm.RMSNorm(3, eps=0.0), ValueError, r"RMSNorm: eps must be a positive"),
        (
            lambda: norm.BatchNorm1d(3, momentum=1.5),
            ValueError,
            r"BatchNorm1d: momentum must be in \[0, 1\], got 1.5",
        ),
        (
            lambda: norm.BatchNorm1d(3, momentum=-0.1),
            ValueError,
            r"BatchNorm1d: momentum must be in \[0, 1\]",
        ),
        (
            lambda: norm.BatchNorm1d(3, momentum="0.1"),  # type: ignore[arg-type]
            TypeError,
            r"BatchNorm1d: momentum must be a float in \[0, 1\] or None, got str",
        ),
        (
            lambda: norm.InstanceNorm2d(3, momentum=None),
            TypeError,
            r"InstanceNorm2d: momentum must be a float in \[0, 1\], got NoneType "
            r"\(torch.nn reads momentum=None as 0 for InstanceNorm: pass 0.0\)",
        ),
        (
            lambda: norm.InstanceNorm1d(3, momentum=2),
            ValueError,
            r"InstanceNorm1d: momentum must be in \[0, 1\], got 2",
        ),
        (lambda: norm.BatchNorm2d(3, affine=1), TypeError, r"BatchNorm2d: affine must be a bool"),  # type: ignore[arg-type]
        (
            lambda: norm.InstanceNorm3d(3, track_running_stats=None),  # type: ignore[arg-type]
            TypeError,
            r"InstanceNorm3d: track_running_stats must be a bool, got NoneType",
        ),
        (
            lambda: norm.BatchNorm2d(3, activation=nn.ReLU()),
            TypeError,
            r"BatchNorm2d: activation must be a plain function",
        ),
        (
            lambda: norm.GroupNorm(4, 6),
            ValueError,
            r"GroupNorm: num_channels must be divisible by num_groups, got num_channels=6 "
            r"and num_groups=4",
        ),
        (lambda: norm.GroupNorm(0, 6), ValueError, r"GroupNorm: num_groups must be >= 1, got 0"),
        (lambda: norm.GroupNorm(2, 0), ValueError, r"GroupNorm: num_channels must be >= 1"),
        (
            lambda: norm.GroupNorm(2, 4, affine="yes"),  # type: ignore[arg-type]
            TypeError,
            r"GroupNorm: affine must be a bool",
        ),
        (lambda: norm.LayerNorm(()), ValueError, r"LayerNorm: normalized_shape must not be empty"),
        (
            lambda: norm.LayerNorm((3, 0)),
            ValueError,
            r"LayerNorm: normalized_shape must be >= 1, got 0",
        ),
        (
            lambda: norm.LayerNorm(3.0),  # type: ignore[arg-type]
            TypeError,
            r"LayerNorm: normalized_shape must be an int or a tuple of ints, got float",
        ),
        (
            lambda: norm.LayerNorm(3, elementwise_affine=0),  # type: ignore[arg-type]
            TypeError,
            r"LayerNorm: elementwise_affine must be a bool",
        ),
        (lambda: norm.LayerNorm(3, bias=None), TypeError, r"LayerNorm: bias must be a bool"),  # type: ignore[arg-type]
        (lambda: norm.BatchNorm1d(3, bias=0), TypeError, r"BatchNorm1d: bias must be a bool"),  # type: ignore[arg-type]
        (lambda: norm.GroupNorm(1, 3, bias="no"), TypeError, r"GroupNorm: bias must be a bool"),  # type: ignore[arg-type]
        (
            lambda: norm.RMSNorm(3, elementwise_affine="no"),  # type: ignore[arg-type]
            TypeError,
            r"RMSNorm: elementwise_affine must be a bool",
        ),
        (lambda: norm.RMSNorm(-2), ValueError, r"RMSNorm: normalized_shape must be >= 1"),
    ],
)
def test_invalid_configurations_fail_at_construction(make, error, message):
    with pytest.raises(error, match=message):
        make()


def _notes(info) -> str:
    return "\n".join(getattr(info.value, "__notes__", []))


def test_bad_inputs_name_the_layer_and_the_expected_shape():
    model = lux.Chain(lux.Conv2d(3, 8, 1), norm.BatchNorm2d(16))
    ps, st = setup(0, model)
    with pytest.raises(ValueError, match=r"\(N, C=16, H, W\), got \(2, 8, 3, 3\)") as info:
        model(randn(2, 3, 3, 3), ps, st)
    assert "in layer_2 (BatchNorm2d(16))" in _notes(info)

    cases = [
        (norm.BatchNorm1d(4), (2, 4, 3, 3), r"expected input of shape \(N, C=4\) or \(N, C=4, L\)"),
        (norm.BatchNorm1d(4), (4,), r"\(N, C=4\) or \(N, C=4, L\), got \(4,\)"),
        (norm.BatchNorm3d(2), (2, 2, 3, 3), r"\(N, C=2, D, H, W\), got \(2, 2, 3, 3\)"),
        (
            norm.InstanceNorm2d(3),
            (2, 4, 3, 3),
            r"\(N, C=3, H, W\) or \(C=3, H, W\), got \(2, 4, 3, 3\)",
        ),
        (norm.InstanceNorm1d(3), (3, 4, 5, 6), r"\(N, C=3, L\) or \(C=3, L\)"),
        (norm.GroupNorm(2, 4), (2, 6, 3), r"\(N, C=4, \*\), got \(2, 6, 3\)"),
        (norm.GroupNorm(2, 4), (4,), r"\(N, C=4, \*\), got \(4,\)"),
    ]
    for layer, shape, message in cases:
        ps, st = setup(0, layer)
        with pytest.raises(ValueError, match=message):
            layer(randn(*shape), ps, st)
    # LayerNorm and RMSNorm: torch's error, with our explanation as a note
    for layer in (norm.LayerNorm((2, 3)), norm.RMSNorm((2, 3))):
        ps, st = setup(0, layer)
        with pytest.raises(RuntimeError) as runtime_info:
            layer(randn(4, 3, 2), ps, st)
        assert "expected input of shape (*, 2, 3), got (4, 3, 2)" in _notes(runtime_info)
    ps, st = setup(0, norm.BatchNorm1d(3))
    with pytest.raises(Exception, match=r"expected a Tensor, got list"):
        norm.BatchNorm1d(3)([1.0, 2.0, 3.0], ps, st)  # type: ignore[arg-type]
    # a training batch needs more than one value per channel (as torch)
    with pytest.raises(ValueError, match=r"Expected more than 1 value per channel"):
        norm.BatchNorm1d(3)(randn(1, 3), ps, st)
    assert norm.BatchNorm1d(3)(randn(1, 3), ps, test_mode(st))[0].shape == (1, 3)
