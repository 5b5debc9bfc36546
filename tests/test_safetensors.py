"""save_safetensors / load_safetensors: round trips (float32, float64, bfloat16, state
tensors), names readable by safetensors itself, and the errors of load_state_dict."""

from __future__ import annotations

import pathlib

import pytest
import safetensors.torch as safetensors_torch
import torch

import lux_torch as lux
from lux_torch.interop import StateDictError
from lux_torch.interop.safetensors import load_safetensors, save_safetensors
from lux_torch.models import TransformerLM


def _lm(dim: int = 16) -> TransformerLM:
    return TransformerLM(11, dim, 2, 4, 2, hidden_dim=24, max_len=8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_round_trip(tmp_path: pathlib.Path, dtype: torch.dtype) -> None:
    lm = _lm()
    ps, st = lux.setup(0, lm, dtype=dtype)
    path = tmp_path / "lm.safetensors"
    save_safetensors(path, ps, st, metadata={"format": "pt"})
    ps2, st2 = load_safetensors(path, lm)
    assert lux.tree.paths(ps2) == lux.tree.paths(ps)
    for a, b in zip(lux.tree.leaves(ps), lux.tree.leaves(ps2), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    tokens = torch.tensor([[1, 2, 3]])
    assert torch.equal(lm(tokens, ps, st)[0], lm(tokens, ps2, st2)[0])
    # the file is plain safetensors, named like torch's state_dict
    raw = safetensors_torch.load_file(str(path))
    assert set(raw) == set(lux.state_dict(ps, st))
    assert "blocks_2.attn.k_proj.weight" in raw and raw["embed.weight"].shape == (11, 16)


def test_state_tensors_and_keys_round_trip(tmp_path: pathlib.Path) -> None:
    model = lux.Chain(lux.Linear(3, 4), lux.BatchNorm1d(4), lux.Dropout(0.5))
    ps, st = lux.setup(3, model)
    st = {**st, "layer_2": {**st["layer_2"], "running_mean": torch.arange(4.0)}}
    save_safetensors(tmp_path / "m.safetensors", ps, st)
    _, st2 = load_safetensors(tmp_path / "m.safetensors", model)
    assert torch.equal(st2["layer_2"]["running_mean"], torch.arange(4.0))
    assert torch.equal(st2["layer_3"]["key"], st["layer_3"]["key"])


def test_shared_tensors_are_written_twice(tmp_path: pathlib.Path) -> None:
    model = lux.Chain(lux.Linear(3, 3), lux.Linear(3, 3))
    ps, st = lux.setup(0, model)
    ps = {"layer_1": ps["layer_1"], "layer_2": ps["layer_1"]}
    save_safetensors(tmp_path / "s.safetensors", ps, st)
    ps2, _ = load_safetensors(tmp_path / "s.safetensors", model)
    assert torch.equal(ps2["layer_2"]["weight"], ps["layer_1"]["weight"])


def test_mismatches_are_listed(tmp_path: pathlib.Path) -> None:
    ps, st = lux.setup(0, _lm())
    path = tmp_path / "lm.safetensors"
    save_safetensors(path, ps, st)
    with pytest.raises(StateDictError, match="shape") as info:
        load_safetensors(path, _lm(dim=8))
    assert "embed.weight" in info.value.mis_shaped[0]
    smaller = TransformerLM(11, 16, 1, 4, 2, hidden_dim=24, max_len=8)
    with pytest.raises(StateDictError) as info:
        load_safetensors(path, smaller)
    assert any(u.startswith("blocks_2.") for u in info.value.unexpected)
    ps_small, _ = load_safetensors(path, smaller, strict=False)
    assert torch.equal(ps_small["norm"]["weight"], ps["norm"]["weight"])
    bigger = TransformerLM(11, 16, 3, 4, 2, hidden_dim=24, max_len=8)
    with pytest.raises(StateDictError) as info:
        load_safetensors(path, bigger)
    assert any(m.startswith("blocks_3.") for m in info.value.missing)
