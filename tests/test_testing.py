"""The conformance harness itself: it passes correct layers and catches each kind of bug.

The layers are defined here (not taken from lux_torch.layers) so that these tests pin the
harness, not the built-ins. References are built with ``nn.utils.skip_init`` (no global RNG).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lux_torch import core, init
from lux_torch import random as lrandom
from lux_torch.testing import TOLERANCES, check_layer
from lux_torch.tree import Static

FAST: dict[str, Any] = {"compile": False}  # compiling is slow; the compile tests opt in


def normal(*shape: int, seed: int = 1) -> torch.Tensor:
    return lrandom.normal(lrandom.key(seed), shape)


# --------------------------------------------------------------------------- layers


class MyLinear(core.Layer):
    """torch.nn.Linear, written the lux way."""

    in_features: int
    out_features: int

    def init_params(self, key):
        k_w, k_b = lrandom.split(key)
        bound = 1 / math.sqrt(self.in_features)
        return {
            "weight": init.uniform(
                k_w, self.out_features, self.in_features, low=-bound, high=bound
            ),
            "bias": init.uniform(k_b, self.out_features, low=-bound, high=bound),
        }

    def __call__(self, x, ps, st):
        return F.linear(x, ps["weight"], ps["bias"]), st

    def extra_repr(self):
        return f"{self.in_features} => {self.out_features}"


class RenamedLinear(MyLinear):
    """Bug: parameter names that do not follow torch.nn."""

    def init_params(self, key):
        ps = super().init_params(key)
        return {"w": ps["weight"], "b": ps["bias"]}

    def __call__(self, x, ps, st):
        return F.linear(x, ps["w"], ps["b"]), st


class ForgetfulLinear(MyLinear):
    """Bug: the bias is a parameter but never used."""

    def __call__(self, x, ps, st):
        return F.linear(x, ps["weight"]), st


class DetachedLinear(MyLinear):
    """Bug: right values, but no gradient reaches the weight."""

    def __call__(self, x, ps, st):
        return F.linear(x, ps["weight"].detach(), ps["bias"]), st


class SlightlyOffLinear(MyLinear):
    """Off by a relative 1e-4: beyond float32's default rtol (1e-5)."""

    def __call__(self, x, ps, st):
        return F.linear(x, ps["weight"], ps["bias"]) * (1 + 1e-4), st


class InPlaceLinear(MyLinear):
    """Bug: an in-place update of a parameter (values unchanged, version bumped)."""

    def __call__(self, x, ps, st):
        ps["weight"].mul_(1.0)
        return super().__call__(x, ps, st)


class GraphBreakLinear(MyLinear):
    def __call__(self, x, ps, st):
        torch._dynamo.graph_break()
        return super().__call__(x, ps, st)


class CompileSensitiveLinear(MyLinear):
    """Bug: different results when compiled."""

    def __call__(self, x, ps, st):
        y, st = super().__call__(x, ps, st)
        return (y + 1 if torch.compiler.is_compiling() else y), st


class BadBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 3


class BadBackwardScale(core.Layer):
    def __call__(self, x, ps, st):
        return BadBackward.apply(x), st


_SHARED_GENERATOR = torch.Generator().manual_seed(0)


class NoisyIdentity(core.Layer):
    """Bug: hidden randomness from a generator that outlives the call."""

    def __call__(self, x, ps, st):
        return x + torch.rand(x.shape, generator=_SHARED_GENERATOR), st


class ReseededNoise(core.Layer):
    """Deterministic, but draws from a torch generator rather than st["key"]."""

    def init_params(self, key):
        return {"scale": torch.ones(())}

    def __call__(self, x, ps, st):
        g = torch.Generator().manual_seed(0)
        return x + ps["scale"] * torch.rand(x.shape, generator=g, dtype=x.dtype), st


class MyDropout(core.Layer):
    p: float = 0.5
    forget_key: bool = False  # bug switch: return the used key instead of the advanced one

    def init_state(self, key):
        return {"key": key.clone(), "training": Static(True)}

    def __call__(self, x, ps, st):
        if not st["training"]:
            return x, st
        new_key, use_key = lrandom.split(st["key"])
        y = lrandom.dropout(use_key, x, self.p)
        return y, {"key": st["key"] if self.forget_key else new_key, "training": st["training"]}


class DropsFlag(core.Layer):
    """Bug: the returned state loses the training flag."""

    def init_state(self, key):
        return {"training": Static(True)}

    def __call__(self, x, ps, st):
        return x, {}


class MyBatchNorm1d(core.Layer):
    """torch.nn.BatchNorm1d on (N, C) inputs, pure: new running statistics are returned."""

    num_features: int
    momentum: float = 0.1
    eps: float = 1e-5
    bug: str = ""  # "stale": forget the new statistics; "inplace": update st in place;
    # "float_count": count batches in a float (the state changes dtype)

    def init_params(self, key):
        return {"weight": torch.ones(self.num_features), "bias": torch.zeros(self.num_features)}

    def init_state(self, key):
        n = self.num_features
        return {
            "running_mean": torch.zeros(n),
            "running_var": torch.ones(n),
            "num_batches_tracked": torch.zeros((), dtype=torch.int64),
            "training": Static(True),
        }

    def __call__(self, x, ps, st):
        if not st["training"]:
            y = F.batch_norm(
                x, st["running_mean"], st["running_var"], ps["weight"], ps["bias"], eps=self.eps
            )
            return y, st
        mean, var = x.mean(0), x.var(0, correction=0)
        y = (x - mean) / torch.sqrt(var + self.eps) * ps["weight"] + ps["bias"]
        m = self.momentum
        unbiased = var.detach() * x.shape[0] / (x.shape[0] - 1)
        new_mean = (1 - m) * st["running_mean"] + m * mean.detach()
        new_var = (1 - m) * st["running_var"] + m * unbiased
        if self.bug == "stale":
            return y, st
        if self.bug == "inplace":
            st["running_mean"].copy_(new_mean)
        new = {"running_mean": new_mean, "running_var": new_var}
        count = st["num_batches_tracked"] + (1.0 if self.bug == "float_count" else 1)
        return y, {**st, **new, "num_batches_tracked": count}


class MyBilinear(MyLinear):
    """torch.nn.Bilinear(in, in, out): a two-input layer, x = (x1, x2)."""

    def init_params(self, key):
        n, m = self.out_features, self.in_features
        bound = 1 / math.sqrt(m)
        k_w, k_b = lrandom.split(key)
        return {
            "weight": init.uniform(k_w, n, m, m, low=-bound, high=bound),
            "bias": init.uniform(k_b, n, low=-bound, high=bound),
        }

    def __call__(self, x, ps, st):
        return F.bilinear(x[0], x[1], ps["weight"], ps["bias"]), st


class Pair(core.Layer):
    """A two-child container (children ``first`` and ``second``, default init)."""

    first: core.Layer
    second: core.Layer

    def __call__(self, x, ps, st):
        h, st_1 = self.first(x, ps["first"], st["first"])
        y, st_2 = self.second(h, ps["second"], st["second"])
        return y, {"first": st_1, "second": st_2}


def linear_ref(*args, **kwargs) -> nn.Module:
    result: nn.Module = nn.utils.skip_init(nn.Linear, *args, **kwargs)
    return result


# --------------------------------------------------------------------------- passing layers


def test_correct_layer_passes_every_check_including_compile():
    report = check_layer(MyLinear(3, 2), normal(4, 3), reference=linear_ref(3, 2))
    expected = [
        "structure",
        "counts",
        "repr",
        "forward",
        "purity",
        "determinism",
        "parity",
        "gradcheck",
        "jvp",
        "compile",
        "vmap",
        "vmap_inputs",
    ]
    assert {k: report[k] for k in expected} == dict.fromkeys(expected, "passed")
    if torch.cuda.is_available():
        assert report["device"] == "passed"
    else:
        assert report["device"] == "skipped: CUDA is not available"


def test_stochastic_layer_checks_both_modes_and_parity_in_test_mode_only():
    report = check_layer(
        MyDropout(0.5), normal(4, 5), reference=nn.Dropout(0.5), compile_backend="eager"
    )
    assert report["parity[train]"].startswith("skipped: stochastic")
    for check in [
        "parity[test]",
        "compile[train]",
        "compile[test]",
        "vmap[train]",
        "gradcheck[train]",
        "determinism[train]",
        "purity[test]",
    ]:
        assert report[check] == "passed", check
    assert "parity" not in report


def test_state_updates_are_compared_with_the_reference_buffers():
    ref = nn.utils.skip_init(nn.BatchNorm1d, 3)
    report = check_layer(MyBatchNorm1d(3), normal(6, 3), reference=ref, **FAST)
    assert report["parity[train]"] == report["parity[test]"] == "passed"
    with pytest.raises(
        AssertionError,
        match=r"(?s)parity\[train\] failed: the returned state .*"
        r"new_st.running_mean",
    ):
        check_layer(MyBatchNorm1d(3, bug="stale"), normal(6, 3), reference=ref, **FAST)


def test_multi_input_layer_and_callable_reference():
    x = (normal(4, 3, seed=1), normal(4, 3, seed=2))
    ref = nn.utils.skip_init(nn.Bilinear, 3, 3, 2)
    assert check_layer(MyBilinear(3, 2), x, reference=ref, **FAST)["parity"] == "passed"

    def reference(tensors, x):
        return F.linear(x, tensors["weight"], tensors["bias"])

    assert check_layer(MyLinear(3, 2), normal(4, 3), reference=reference, **FAST)["parity"] == (
        "passed"
    )


def test_containers_can_be_checked_against_differently_named_references():
    layer, ref = (
        Pair(MyLinear(3, 4), MyLinear(4, 2)),
        nn.Sequential(linear_ref(3, 4), linear_ref(4, 2)),
    )
    with pytest.raises(AssertionError, match=r"'0.weight' is missing from ps"):
        check_layer(layer, normal(4, 3), reference=ref, **FAST)
    report = check_layer(
        layer,
        normal(4, 3),
        reference=ref,
        rename=lambda n: n.replace("first.", "0.").replace("second.", "1."),
        **FAST,
    )
    assert report["parity"] == "passed"


def test_options_skip_checks_and_tolerances_are_explicit():
    report = check_layer(
        MyLinear(3, 2), normal(4, 3), gradcheck=False, vmap=False, cuda=False, **FAST
    )
    assert report["parity"] == "skipped: no reference"
    assert report["gradcheck"] == report["vmap"] == report["compile"] == "skipped: disabled"
    assert report["device"] == "skipped: disabled (cuda=False)"
    assert check_layer(MyLinear(3, 2), normal(4, 3), device="cpu", **FAST)["device"] == (
        "skipped: the device is the CPU"
    )
    assert TOLERANCES[torch.float32] == (1e-5, 1e-6)
    off = SlightlyOffLinear(3, 2)
    with pytest.raises(AssertionError, match=r"(?s)parity failed: outputs differ.*rtol=1e-05"):
        check_layer(off, normal(4, 3), reference=linear_ref(3, 2), **FAST)
    check_layer(off, normal(4, 3), reference=linear_ref(3, 2), rtol=1e-3, **FAST)


def test_expected_repr_is_exact():
    layer = MyLinear(3, 2)
    check_layer(layer, normal(4, 3), expected_repr="MyLinear(3 => 2)  # 8 parameters", **FAST)
    with pytest.raises(
        AssertionError, match=r"(?s)^check_layer\(MyLinear\(3 => 2\)\): repr failed"
    ):
        check_layer(layer, normal(4, 3), expected_repr="MyLinear(3 => 2)", **FAST)


# --------------------------------------------------------------------------- caught bugs


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        (RenamedLinear(3, 2), r"parity failed: .*'weight' is missing from ps"),
        (ForgetfulLinear(3, 2), r"parity failed: outputs differ from the reference's"),
        (DetachedLinear(3, 2), r"parity failed: gradients .*grad ps.weight"),
        (MyBilinear(3, 2), r"counts failed: the reference has 8 parameters, ps has 20"),
    ],
    ids=["names", "outputs", "gradients", "counts"],
)
def test_parity_bugs_are_caught(layer, match):
    with pytest.raises(AssertionError, match="(?s)" + match):
        check_layer(layer, normal(4, 3), reference=linear_ref(3, 2), gradcheck=False, **FAST)


@pytest.mark.parametrize(
    ("layer", "x", "match"),
    [
        (InPlaceLinear(3, 2), normal(4, 3), r"purity failed: .*ps.weight was modified in place"),
        (
            MyBatchNorm1d(3, bug="inplace"),
            normal(6, 3),
            r"purity\[train\] failed: .*st.running_mean was modified in place",
        ),
        (NoisyIdentity(), normal(4, 3), r"determinism failed: two calls .* differ"),
        (
            MyDropout(forget_key=True),
            normal(4, 3),
            r"determinism\[train\] failed: a stochastic layer must return an advanced key",
        ),
        (
            ReseededNoise(),
            normal(4, 3),
            r"vmap failed: torch.func.vmap over 3 stacked \(ps, st\) failed "
            r"\(the layer uses torch's random",
        ),
        (BadBackwardScale(), normal(2, 3), r"gradcheck failed: Jacobian mismatch"),
        (
            DropsFlag(),
            normal(2, 3),
            r"forward\[train\] failed: the returned state does not match st",
        ),
    ],
    ids=[
        "inplace-ps",
        "inplace-st",
        "nondeterministic",
        "stale-key",
        "torch-rng",
        "backward",
        "state-structure",
    ],
)
def test_contract_bugs_are_caught(layer, x, match):
    with pytest.raises(AssertionError, match="(?s)" + match):
        check_layer(layer, x, **FAST)


def test_graph_break_fails_compile_with_a_clear_message():
    with pytest.raises(
        AssertionError,
        match=r"(?s)compile failed: torch.compile\(fullgraph=True\) "
        r"could not capture the layer in one graph",
    ):
        check_layer(GraphBreakLinear(3, 2), normal(4, 3), gradcheck=False, vmap=False)


def test_compiled_results_must_match_eager():
    with pytest.raises(AssertionError, match=r"(?s)compile failed: compiled results differ"):
        check_layer(CompileSensitiveLinear(3, 2), normal(4, 3), compile_backend="eager")


def test_structure_and_forward_contract():
    layer = MyLinear(3, 2)
    ps = core.init_params(0, layer)
    with pytest.raises(AssertionError, match=r"(?s)structure failed:.*ps is missing keys: bias"):
        check_layer(layer, normal(4, 3), ps={"weight": ps["weight"]}, **FAST)
    with pytest.raises(AssertionError, match=r"(?s)forward failed: the layer raised RuntimeError"):
        check_layer(layer, normal(4, 5), **FAST)


class SignBranch(core.Layer):
    """Python control flow on the input's values: fine eagerly, not under vmap."""

    def __call__(self, x, ps, st):
        return (x if bool(x.sum() > 0) else -x), st


class Centre(core.Layer):
    """A parameter-free layer: the vmap over (ps, st) has nothing to stack."""

    def __call__(self, x, ps, st):
        return x - x.mean(), st


def test_vmap_over_inputs_covers_parameter_free_layers():
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0)).abs()
    report = check_layer(Centre(), x, compile=False, gradcheck=False)
    assert report["vmap"].startswith("skipped")  # nothing to stack in ps/st
    assert report["vmap_inputs"] == "passed"
    with pytest.raises(
        AssertionError,
        match=r"vmap_inputs failed: torch\.func\.vmap over 3 stacked inputs \(shared ps, st\) "
        r"failed: ",
    ):
        check_layer(SignBranch(), x, compile=False, gradcheck=False)


# --------------------------------------------------------------------------- more caught bugs
#
# Each layer below has one bug that only one check sees; check_layer must fail on it with a
# message that names the check and what differs (the mutation tests of the harness: a
# check that compares a result with itself, or is dropped, lets one of them through).


class ScaleFn(torch.autograd.Function):
    """``x * scale`` with a hand-written backward and torch's generated batching rule."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, scale):
        return x * scale

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        x, scale = ctx.saved_tensors
        return grad * scale, (grad * x).sum_to_size(scale.shape)

    @staticmethod
    def jvp(ctx, x_t, scale_t):
        x, scale = ctx.saved_tensors
        return x_t * scale + x * scale_t


class FirstMemberScale(ScaleFn):
    """:class:`ScaleFn` with a hand-written batching rule that has a bug: under vmap over
    ``scale`` it uses the first member's scale for every member."""

    generate_vmap_rule = False

    @staticmethod
    def vmap(info, in_dims, x, scale):
        x_dim, scale_dim = in_dims
        if scale_dim is not None:
            scale = scale.select(scale_dim, 0)  # the bug
        if x_dim is None:
            return x * scale, None
        return x.movedim(x_dim, 0) * scale, 0


class WrongUnderVmapScale(core.Layer):
    features: int

    def init_params(self, key):
        return {"scale": init.normal(key, self.features)}

    def __call__(self, x, ps, st):
        return FirstMemberScale.apply(x, ps["scale"]), st


class BatchCentreFn(torch.autograd.Function):
    """``x - mean(x)`` with a batching rule that has a bug: the mean runs over the vmapped
    dimension too, mixing the samples of a batch."""

    generate_vmap_rule = False

    @staticmethod
    def forward(x):
        return x - x.mean()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad - grad.mean()

    @staticmethod
    def jvp(ctx, tangent):
        return tangent - tangent.mean()

    @staticmethod
    def vmap(info, in_dims, x):
        return x - x.mean(), in_dims[0]  # the bug: the mean of the whole batch


class WrongUnderVmapCentre(core.Layer):
    def __call__(self, x, ps, st):
        return BatchCentreFn.apply(x), st


class DoubledInputGrad(torch.autograd.Function):
    """The identity, with a bug in its backward: twice the gradient."""

    @staticmethod
    def forward(x):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad


class WrongInputGradLinear(MyLinear):
    def __call__(self, x, ps, st):
        return super().__call__(DoubledInputGrad.apply(x), ps, st)


class ExtraDimLinear(MyLinear):
    """Bug: right values, one leading dimension too many."""

    def __call__(self, x, ps, st):
        y, st = super().__call__(x, ps, st)
        return y.unsqueeze(0), st


class DoubleLinear(MyLinear):
    """Bug: right values, float64 output from float32 inputs."""

    def __call__(self, x, ps, st):
        y, st = super().__call__(x, ps, st)
        return y.double(), st


class MetaShortcutLinear(MyLinear):
    """Bug: a shortcut for the meta device (where param_count initialises) that forgets
    the bias, so param_count disagrees with the parameters init_params gives."""

    def init_params(self, key):
        ps = super().init_params(key)
        return {"weight": ps["weight"]} if key.is_meta else ps


class CountlessRepr(MyLinear):
    """Bug: a hand-written repr without the parameter count."""

    def __repr__(self):
        return f"CountlessRepr({self.in_features} => {self.out_features})"


class MiscountedRepr(MyLinear):
    """Bug: a hand-written repr with a wrong count that contains the right one (18 vs 8)."""

    def __repr__(self):
        return f"MiscountedRepr({self.in_features} => {self.out_features})  # 18 parameters"


class ParentsRepr(CountlessRepr):
    """Bug: inherits a hand-written repr that names another class."""

    def __repr__(self):
        return f"MyLinear({self.in_features} => {self.out_features})  # 8 parameters"


class InPlaceInput(MyLinear):
    """Bug: scales its input in place (and undoes it: values unchanged, version bumped)."""

    def __call__(self, x, ps, st):
        x.mul_(2.0).div_(2.0)
        return super().__call__(x, ps, st)


class HiddenInPlaceInput(MyLinear):
    """Bug: writes into its input through ``.data``, which bumps no version counter."""

    def __call__(self, x, ps, st):
        y, st = super().__call__(x.clone(), ps, st)
        x.data.add_(1.0)
        return y, st


class AddsToParams(MyLinear):
    """Bug: caches a value in the caller's ps dict."""

    def __call__(self, x, ps, st):
        ps["cache"] = ps["weight"].sum()
        return super().__call__(x, ps, st)


class ReplacesParam(MyLinear):
    """Bug: stores a new tensor in the caller's ps dict (the old object is replaced)."""

    def __call__(self, x, ps, st):
        ps["weight"] = ps["weight"] * 1.0
        return super().__call__(x, ps, st)


class PopsState(MyDropout):
    """Bug: removes the key from the caller's st dict."""

    def __call__(self, x, ps, st):
        y, new_st = super().__call__(x, ps, dict(st))
        st.pop("key")
        return y, new_st


@pytest.mark.parametrize(
    ("layer", "x", "reference", "match"),
    [
        (
            WrongUnderVmapScale(3),
            normal(4, 3),
            None,
            r"vmap failed: vmap over 3 stacked \(ps, st\) differs from a loop:.*y: ",
        ),
        (
            WrongUnderVmapCentre(),
            normal(4, 3),
            None,
            r"vmap_inputs failed: vmap over 3 stacked inputs \(shared ps, st\) differs from "
            r"a loop:.*y: ",
        ),
        (
            WrongInputGradLinear(3, 2),
            normal(4, 3),
            linear_ref(3, 2),
            r"parity failed: gradients of sum\(y \* w\) differ from the reference's:.*grad x: ",
        ),
        (
            ExtraDimLinear(3, 2),
            normal(4, 3),
            linear_ref(3, 2),
            r"parity failed: outputs differ from the reference's:.*y: shape \(1, 4, 2\), "
            r"expected \(4, 2\)",
        ),
        (
            DoubleLinear(3, 2),
            normal(4, 3),
            linear_ref(3, 2),
            r"parity failed: outputs differ from the reference's:.*y: dtype torch.float64, "
            r"expected torch.float32",
        ),
        (
            MetaShortcutLinear(3, 2),
            normal(4, 3),
            None,
            r"structure failed: ps has unexpected keys: bias",
        ),
        (
            CountlessRepr(3, 2),
            normal(4, 3),
            None,
            r"repr failed: repr\(layer\) does not show '8 parameters'",
        ),
        (
            MiscountedRepr(3, 2),
            normal(4, 3),
            None,
            r"repr failed: repr\(layer\) does not show '8 parameters'",
        ),
        (
            ParentsRepr(3, 2),
            normal(4, 3),
            None,
            r"repr failed: repr\(layer\) does not name the class 'ParentsRepr'",
        ),
        (
            MyBatchNorm1d(3, bug="float_count"),
            normal(6, 3),
            None,
            r"forward\[train\] failed: the returned state does not match st:.*"
            r"new_st.num_batches_tracked is \(\(\), torch.float32\), "
            r"expected \(\(\), torch.int64\)",
        ),
        (InPlaceInput(3, 2), normal(4, 3), None, r"purity failed: .*x was modified in place"),
        (HiddenInPlaceInput(3, 2), normal(4, 3), None, r"purity failed: .*x: values changed"),
        (AddsToParams(3, 2), normal(4, 3), None, r"purity failed: .*ps.cache was added"),
        (
            ReplacesParam(3, 2),
            normal(4, 3),
            None,
            r"purity failed: .*ps.weight was replaced by another object",
        ),
        (PopsState(), normal(4, 3), None, r"purity\[train\] failed: .*st.key was removed"),
    ],
    ids=[
        "vmap-params",
        "vmap-inputs",
        "input-gradient",
        "output-shape",
        "output-dtype",
        "param-count",
        "repr-without-count",
        "repr-wrong-count",
        "repr-other-class",
        "state-dtype",
        "mutates-x",
        "mutates-x-data",
        "adds-to-ps",
        "replaces-ps-entry",
        "removes-st-entry",
    ],
)
def test_harness_catches_each_bug(layer, x, reference, match):
    # gradcheck off: every bug here must be caught by the check named in `match` alone
    with pytest.raises(AssertionError, match="(?s)" + match):
        check_layer(layer, x, reference=reference, gradcheck=False, **FAST)


def test_correct_custom_batching_rules_pass():
    # the buggy layers above minus their bugs pass: the failures are the bugs, not the
    # custom autograd.Functions themselves
    class GoodScale(WrongUnderVmapScale):
        def __call__(self, x, ps, st):
            return ScaleFn.apply(x, ps["scale"]), st

    report = check_layer(GoodScale(3), normal(4, 3), **FAST)
    assert report["vmap"] == report["vmap_inputs"] == report["gradcheck"] == "passed"


# --------------------------------------------------------------------------- forward mode


class WrongTangent(ScaleFn):
    """:class:`ScaleFn` (right backward) with a wrong forward-mode rule: ``J v`` is
    missing the term of ``scale``'s tangent."""

    @staticmethod
    def jvp(ctx, x_t, scale_t):
        _, scale = ctx.saved_tensors
        return x_t * scale


class WrongTangentScale(core.Layer):
    def init_params(self, key):
        return {"scale": init.normal(key, 3)}

    def __call__(self, x, ps, st):
        return WrongTangent.apply(x, ps["scale"]), st


class NoForwardRule(core.Layer):
    """CPU scaled_dot_product_attention has no forward-mode rule."""

    def __call__(self, x, ps, st):
        return F.scaled_dot_product_attention(x, x, x), st


class ForwardModeBranch(core.Layer):
    """Bug: another function under forward-mode AD (its derivative is consistent)."""

    def __call__(self, x, ps, st):
        return (x * 3 if torch.autograd.forward_ad._current_level >= 0 else x * 2), st


def test_forward_mode_is_checked_against_reverse_mode():
    report = check_layer(MyLinear(3, 2), normal(4, 3), **FAST)
    assert report["jvp"] == "passed"
    with pytest.raises(
        AssertionError, match=r"jvp failed: forward and reverse mode disagree: <w, J v> = "
    ):
        check_layer(WrongTangentScale(), normal(4, 3), **FAST)
    # reverse mode alone is right: only the forward-mode check sees the bug
    report = check_layer(WrongTangentScale(), normal(4, 3), jvp=False, **FAST)
    assert report["gradcheck"] == "passed"
    assert report["jvp"] == "skipped: disabled"
    with pytest.raises(
        AssertionError, match=r"(?s)jvp failed: the output under torch.func.jvp differs"
    ):
        check_layer(ForwardModeBranch(), normal(4, 3), **FAST)


def test_a_missing_forward_rule_fails_or_is_declared():
    x = normal(1, 2, 3, 4)
    with pytest.raises(
        AssertionError,
        match=r"(?s)jvp failed: torch.func.jvp \(forward-mode AD\) raised NotImplementedError.*"
        r"pass jvp='<reason>'",
    ):
        check_layer(NoForwardRule(), x, vmap=False, **FAST)
    reason = "CPU scaled_dot_product_attention has no forward-mode rule"
    report = check_layer(NoForwardRule(), x, vmap=False, jvp=reason, **FAST)
    assert report["jvp"] == f"skipped: {reason}"
    assert report["gradcheck"] == "passed"
