"""Every built-in layer accepts every argument of its torch.nn namesake's constructor.

Arguments that have no meaning for a pure layer are accepted without being stored
(``Layer.constructor_only``): ``device``/``dtype`` only as ``None`` (tensors are made by
``lux.setup``), ``inplace`` and torch's fast-path switches as any bool (same results).
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import lux_torch as lux


def _pairs() -> list[tuple[type[lux.Layer], type[nn.Module]]]:
    out = []
    for name in lux.__all__:
        ours = getattr(lux, name)
        theirs = getattr(nn, name, None)
        if isinstance(ours, type) and issubclass(ours, lux.Layer) and isinstance(theirs, type):
            out.append((ours, theirs))
    return out


def test_every_torch_constructor_argument_is_accepted() -> None:
    pairs = _pairs()
    assert len(pairs) > 80  # the torch.nn namesakes: layers, activations, padding, ...
    missing = {}
    for ours, theirs in pairs:
        wanted = [
            p
            for p in inspect.signature(theirs.__init__).parameters
            if p not in ("self", "args", "kwargs")
        ]
        accepted = set(inspect.signature(ours.__init__).parameters) | set(ours.constructor_only)
        if gaps := [p for p in wanted if p not in accepted]:
            missing[ours.__name__] = gaps
    assert missing == {}


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: lux.Linear(2, 3, **kw),
        lambda **kw: lux.Conv2d(1, 2, 3, **kw),
        lambda **kw: lux.BatchNorm1d(3, **kw),
        lambda **kw: lux.LayerNorm(3, **kw),
        lambda **kw: lux.LSTM(2, 3, **kw),
        lambda **kw: lux.GRUCell(2, 3, **kw),
        lambda **kw: lux.MultiheadAttention(4, 2, **kw),
        lambda **kw: lux.TransformerEncoderLayer(4, 2, **kw),
        lambda **kw: lux.EmbeddingBag(5, 2, **kw),
    ],
)
def test_device_and_dtype_are_none_or_a_clear_error(make) -> None:
    assert make(device=None, dtype=None) == make()  # not stored: the same configuration
    name = type(make()).__name__
    with pytest.raises(
        ValueError,
        match=rf"^{name}: device='cpu' is not supported: .*"
        r"lux_torch.setup\(key, model, device=...\)",
    ):
        make(device="cpu")
    with pytest.raises(ValueError, match=rf"^{name}: dtype=torch.float64 is not supported"):
        make(dtype=torch.float64)


def test_flags_without_effect_are_accepted_and_checked() -> None:
    # constructor_only arguments: taken by the constructor, not dataclass fields, so no type
    # checker sees them
    assert lux.Dropout(0.2, inplace=True) == lux.Dropout(0.2)  # type: ignore[call-arg]
    assert lux.Dropout2d(0.2, inplace=True) == lux.Dropout2d(0.2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="Dropout: inplace must be a bool, got int"):
        lux.Dropout(0.2, inplace=1)  # type: ignore[call-arg]
    layer = lux.TransformerEncoderLayer(4, 2)
    stack = lux.TransformerEncoder(layer, 2, enable_nested_tensor=False, mask_check=True)  # type: ignore[call-arg]
    assert stack == lux.TransformerEncoder(layer, 2)
    with pytest.raises(ValueError, match="EmbeddingBag: _weight is not supported"):
        lux.EmbeddingBag(5, 2, _weight=torch.ones(5, 2))  # type: ignore[call-arg]
    # a layer without them still rejects unknown keywords, as any Python call
    with pytest.raises(TypeError, match="unexpected keyword argument 'device'"):
        lux.Flatten(device=None)  # type: ignore[call-arg]
