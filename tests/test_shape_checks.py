"""Every layer checks the tensors it owns in ``ps``/``st`` against its configuration.

Issue 14 §3: mis-shaped parameters used to run silently (broadcasting biases, MLP weights
that happen to chain) or crash the interpreter (torch's fused LSTM kernel does not check
shapes). The check lives in one place, the layer call wrapper of ``lux_torch.core``, and
compares against the layer's shape signature (its initialisers run once on the meta device).
"""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import torch

import lux_torch as lux
from lux_torch.testing import check_layer


def _notes(info: pytest.ExceptionInfo[BaseException]) -> str:
    return "\n".join(getattr(info.value, "__notes__", []))


def _replace(tree: dict, path: tuple[str, ...], value: torch.Tensor) -> dict:
    head, *rest = path
    new = dict(tree)
    new[head] = _replace(tree[head], tuple(rest), value) if rest else value
    return new


def test_an_mlps_parameters_are_refused_by_a_model_of_other_width() -> None:
    # the 2 -> 32 -> 1 parameters chain through (2 -> 16 -> 1) layers without a shape error
    wide = lux.Chain(lux.Linear(2, 32, activation=torch.tanh), lux.Linear(32, 1))
    narrow = lux.Chain(lux.Linear(2, 16, activation=torch.tanh), lux.Linear(16, 1))
    ps, st = lux.setup(0, wide)
    with pytest.raises(ValueError) as info:
        narrow(torch.ones(3, 2), ps, st)
    assert str(info.value).startswith(
        "Linear(2 => 16, tanh): ps['weight'] has shape (32, 2), but the layer's configuration "
        "expects a tensor of shape (16, 2)"
    )
    assert "in layer_1 (Linear(2 => 16, tanh))" in _notes(info)


CASES = [
    # (layer, input, tree, path, bad shape, expected shape)
    (lux.Linear(4, 5), torch.ones(2, 4), "ps", ("bias",), (1,), (5,)),
    (lux.Linear(4, 5), torch.ones(2, 4), "ps", ("bias",), (5, 4), (5,)),
    (lux.LSTM(10, 20), torch.ones(2, 3, 10), "ps", ("weight_hh_l0",), (1, 1), (80, 20)),
    (lux.LSTM(10, 20), torch.ones(2, 3, 10), "ps", ("bias_ih_l0",), (1,), (80,)),
    (lux.GRU(3, 4, num_layers=2), torch.ones(2, 3, 3), "ps", ("weight_ih_l1",), (12, 3), (12, 4)),
    (
        lux.MultiheadAttention(8, 2, batch_first=True),
        (torch.ones(2, 3, 8),) * 3,
        "ps",
        ("out_proj", "bias"),
        (1,),
        (8,),
    ),
    (lux.Conv2d(3, 4, 3), torch.ones(1, 3, 8, 8), "ps", ("weight",), (4, 3, 2, 2), (4, 3, 3, 3)),
    (lux.BatchNorm1d(4), torch.ones(3, 4), "st", ("running_mean",), (1,), (4,)),
    (lux.LayerNorm(6), torch.ones(2, 6), "ps", ("weight",), (1,), (6,)),
    (lux.Embedding(10, 3), torch.tensor([1, 2]), "ps", ("weight",), (12, 3), (10, 3)),
    (lux.Dropout(0.5), torch.ones(4), "st", ("key",), (3,), (2,)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{type(c[0]).__name__}-{'.'.join(c[3])}")
def test_a_mis_shaped_tensor_is_refused_before_the_layer_runs(case) -> None:
    layer, x, which, path, bad, expected = case
    ps, st = lux.setup(0, layer)
    if which == "ps":
        ps = _replace(ps, path, torch.zeros(bad))
    else:
        st = _replace(st, path, torch.zeros(bad, dtype=lux.tree.leaves(st)[0].dtype))
    entry = which + "".join(f"[{k!r}]" for k in path)
    with pytest.raises(ValueError) as info:
        layer(x, ps, st)
    message = str(info.value)
    assert f"{entry} has shape {bad}" in message
    assert f"expects a tensor of shape {expected}" in message
    assert type(layer).__name__ in message


def test_the_fused_lstm_kernel_never_sees_a_mis_shaped_weight() -> None:
    # torch._VF.lstm reads out of bounds for weight_hh (20, 0): a crash, not an error, unless
    # the layer refuses the tensor first. A child process keeps a crash from killing the run.
    code = textwrap.dedent(
        """
        import torch, lux_torch as lux
        model = lux.LSTM(10, 20)
        ps, st = lux.setup(0, model)
        ps = {**ps, "weight_hh_l0": torch.zeros(20, 0)}
        try:
            model(torch.ones(2, 3, 10), ps, st)
        except ValueError as err:
            print("refused:", err)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "refused: LSTM(10 => 20): ps['weight_hh_l0'] has shape (20, 0)" in done.stdout


def test_a_missing_or_non_tensor_entry_gets_its_own_error_type() -> None:
    layer = lux.Linear(2, 3)
    ps, st = lux.setup(0, layer)
    with pytest.raises(KeyError) as info:
        layer(torch.ones(1, 2), {"weight": ps["weight"]}, st)
    assert "ps is missing keys: bias" in _notes(info)
    with pytest.raises(TypeError, match=r"ps\['bias'\] is a NoneType, but the layer's config"):
        layer(torch.ones(1, 2), {**ps, "bias": None}, st)  # type: ignore[dict-item]


class Affine(lux.Layer):
    features: int

    def init_params(self, key):
        return {"scale": torch.ones(self.features), "shift": torch.zeros(self.features)}

    def __call__(self, x, ps, st):
        return x * ps["scale"] + ps["shift"], st


def test_custom_layers_are_checked_for_free() -> None:
    layer = Affine(3)
    ps, st = lux.setup(0, layer)
    assert layer(torch.ones(2, 3), ps, st)[0].shape == (2, 3)
    # (1,) would broadcast silently
    with pytest.raises(ValueError, match=r"Affine\(features=3\): ps\['scale'\] has shape \(1,\)"):
        layer(torch.ones(2, 3), {**ps, "scale": torch.ones(1)}, st)
    # the harness' shape check holds custom layers to the same standard
    assert check_layer(layer, torch.ones(2, 3), compile=False)["shapes"] == "passed"


def test_the_signature_survives_copies_pickles_and_rebuilt_containers() -> None:
    layer = lux.Chain(lux.Linear(2, 3), lux.BatchNorm1d(3))
    ps, st = lux.setup(0, layer)
    bad = _replace(ps, ("layer_1", "weight"), torch.zeros(3, 5))
    for other in (
        copy.copy(layer),
        copy.deepcopy(layer),
        pickle.loads(pickle.dumps(layer)),
        lux.layer_map(lambda layer, ps, st, name: (layer, ps, st), layer, ps, st)[0],
    ):
        with pytest.raises(ValueError, match=r"ps\['weight'\] has shape \(3, 5\)"):
            other(torch.ones(4, 2), bad, st)


def test_the_signature_is_derived_data_not_configuration() -> None:
    layer = lux.Linear(2, 3)
    assert layer == lux.Linear(2, 3) and hash(layer) == hash(lux.Linear(2, 3))
    assert "_lux_signature" not in pickle.loads(pickle.dumps(layer)).__reduce__()[1][1]


def test_under_grad_vmap_and_compile_correct_shapes_pass_and_wrong_ones_raise() -> None:
    model = lux.Chain(lux.Linear(2, 4, activation=torch.tanh), lux.Linear(4, 1))
    ps, st = lux.setup(0, model)
    x = torch.ones(5, 2)

    def loss(p):
        return model(x, p, st)[0].sum()

    torch.func.grad(loss)(ps)  # passes
    stacked = lux.tree.stack([ps, ps, ps])
    ys = torch.func.vmap(lambda p: model(x, p, st)[0])(stacked)  # per-member shapes pass
    assert ys.shape == (3, 5, 1)
    bad = _replace(ps, ("layer_2", "bias"), torch.zeros(5, 1))
    with pytest.raises(ValueError, match=r"ps\['bias'\] has shape \(5, 1\)"):
        torch.func.grad(loss)(bad)
    with pytest.raises(ValueError, match=r"ps\['bias'\] has shape \(5, 1\)"):
        torch.func.vmap(lambda p: model(x, p, st)[0])(lux.tree.stack([bad, bad]))


@pytest.mark.slow
def test_compiled_calls_check_shapes_too() -> None:
    model = lux.Chain(lux.Linear(2, 4, activation=torch.tanh), lux.Linear(4, 1))
    ps, st = lux.setup(0, model)
    f = torch.compile(lambda x, p: model(x, p, st)[0], fullgraph=True, backend="eager")
    x = torch.ones(5, 2)
    assert torch.allclose(f(x, ps), model(x, ps, st)[0])
    bad = _replace(ps, ("layer_2", "bias"), torch.zeros(5, 1))
    # lux's own ValueError, not Dynamo's "Observed exception" with the message in its details
    # (the actual sizes may be symbolic in a trace: the message gives the expected shape)
    expected = (
        r"^Linear\(4 => 1\): ps\['bias'\] has another shape, but the layer's configuration "
        r"expects a tensor of shape \(1,\)"
    )
    option_sets: list[dict[str, Any]] = [{}, {"dynamic": True}]
    for options in option_sets:
        g = torch.compile(lambda x, p: model(x, p, st)[0], fullgraph=True, **options)
        with pytest.raises(ValueError, match=expected):
            g(x, bad)
    with pytest.raises(ValueError, match=expected):
        f(x, bad)


def test_a_float64_input_into_float32_parameters_says_how_to_cast() -> None:
    model = lux.Chain(lux.Linear(2, 3), lux.Linear(3, 1))
    ps, st = lux.setup(0, model)
    with pytest.raises(RuntimeError) as info:
        model(torch.ones(1, 2, dtype=torch.float64), ps, st)
    notes = _notes(info)
    assert (
        "in layer_1 (Linear(2 => 3)): the input is float64 but the parameters are float32" in notes
    )
    assert "lux.f64(ps)" in notes and "x.to(torch.float32)" in notes
    conv = lux.Conv1d(2, 1, 1)
    ps, st = lux.setup(0, conv)
    with pytest.raises(RuntimeError) as info:
        conv(torch.ones(1, 2, 4, dtype=torch.float64), ps, st)
    assert "lux.f64(ps)" in _notes(info)


def test_the_harness_fails_a_layer_that_computes_with_mis_shaped_parameters() -> None:
    layer = Affine(2)
    del layer.__dict__["_lux_signature"]  # as if the core check did not exist
    ps, st = lux.setup(0, layer)
    assert layer(torch.ones(3, 2), {**ps, "scale": torch.ones(1)}, st)[0].shape == (3, 2)
    with pytest.raises(AssertionError) as info:
        check_layer(layer, torch.ones(3, 2), compile=False, vmap=False, gradcheck=False)
    message = str(info.value)
    assert message.startswith("check_layer(Affine(features=2)): shapes failed:")
    assert "ps.scale of shape (2,) replaced by one of shape (2, 2): raised RuntimeError" in message


class Gain(lux.Layer):
    """Its own tensor's shape depends on its child's configuration."""

    inner: lux.Linear

    def init_params(self, key):
        return {"inner": self.inner.init_params(key), "g": torch.ones(self.inner.out_features)}

    def __call__(self, x, ps, st):
        y, _ = self.inner(x, ps["inner"], st["inner"])
        return y * ps["g"], st


def test_a_rebuilt_container_derives_its_signature_from_its_new_children() -> None:
    model = Gain(lux.Linear(2, 3))
    ps, st = lux.setup(0, model)

    def widen(layer, ps, st, name):
        if isinstance(layer, lux.Linear):
            return lux.Linear(2, 5), *lux.setup(0, lux.Linear(2, 5))
        return layer, ps, st

    wide, _, _ = lux.layer_map(widen, model, ps, st)
    ps, st = lux.setup(0, wide)
    assert wide(torch.ones(4, 2), ps, st)[0].shape == (4, 5)  # ps['g'] of shape (5,) fits
    with pytest.raises(ValueError, match=r"ps\['g'\] has shape \(3,\), but .* shape \(5,\)"):
        wide(torch.ones(4, 2), {**ps, "g": torch.ones(3)}, st)
