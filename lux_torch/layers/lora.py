"""Low-rank adaptation (LoRA, Hu et al. 2021): :class:`LoRA` wraps a layer whose parameters
hold a ``weight`` of shape ``(out, in)`` applied as ``x @ weight.T`` (``Linear``) and adds a
trainable low-rank update ``(alpha / rank) * B A``; :func:`merge` / :func:`unmerge` fold the
update into the weight and back; :func:`apply_lora` wraps the named ``Linear`` layers of a
model and freezes everything else; :func:`merge_lora` merges every ``LoRA`` of a model.

The base layer's parameters are frozen with :func:`lux_torch.freeze` semantics: they live
in ``st`` (``st["base"]["frozen_params"]``), so gradients and optimizers see only ``A`` and
``B``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from .. import init
from ..core import Layer, Params, State, init_params
from ..experimental.frozen import Frozen, freeze, unfreeze
from ..experimental.mapping import layer_map
from ..tree import paths
from ._common import check_int, describe_value
from .basic import Linear
from .dropout import Dropout

__all__ = ["LoRA", "apply_lora", "merge", "merge_lora", "unmerge"]


def _weight_shape(layer: Layer) -> tuple[int, int]:
    template = init_params(0, layer, device="meta")
    w = template.get("weight") if isinstance(template, dict) else None
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        raise TypeError(
            f"LoRA: the wrapped layer needs a 2-d parameter 'weight' (out, in), as Linear; "
            f"{type(layer).__name__}'s parameters are {describe_value(template)}"
        )
    return int(w.shape[0]), int(w.shape[1])


class LoRA(Layer):
    """``y = base(x) + (alpha / rank) * dropout(x) @ A.T @ B.T`` with ``base`` frozen.

    ``A`` starts as ``torch.nn.Linear``'s weight does (``U(-1/sqrt(in), 1/sqrt(in))``, as
    peft's ``kaiming_uniform(a=sqrt(5))``) and ``B`` at zero, so the wrapped layer initially
    computes exactly what ``base`` does.

    Arguments:
        base: the layer to adapt: its parameters hold ``weight`` ``(out, in)`` used as
            ``x @ weight.T`` (e.g. :class:`~lux_torch.layers.basic.Linear`).
        rank: ``r``, the rank of the update.
        alpha: the update's scale numerator (default ``rank``: scale 1).
        dropout: dropout on the update's input (training mode; from ``st``'s key).

    Input:
        Whatever ``base`` accepts, ``(*, in)``.

    Returns:
        ``(*, out)`` and the new state.

    **Parameters**
        - ``base``: ``{}`` (frozen)
        - ``lora_A``: ``(rank, in)``
        - ``lora_B``: ``(out, rank)`` (zeros)

    **States**
        - ``base``: ``{"frozen_params": base's parameters, "states": base's state}``
          (:class:`~lux_torch.experimental.frozen.Frozen`)
        - ``drop``: the :class:`~lux_torch.layers.dropout.Dropout`'s state (only with
          ``dropout > 0``)

    Example:
        >>> layer = LoRA(Linear(64, 64, bias=False), rank=4, alpha=8)
        >>> ps, st = lux_torch.setup(0, layer)  # lora_A (4, 64), lora_B (64, 4)  # doctest: +SKIP
    """

    base: Frozen
    rank: int
    alpha: float
    dropout: float
    drop: Dropout | None

    def __init__(
        self, base: Layer, rank: int, alpha: float | None = None, dropout: float = 0.0
    ) -> None:
        check_int("LoRA", "rank", rank, 1)
        inner = base.layer if isinstance(base, Frozen) else base
        _weight_shape(inner)
        if alpha is None:
            alpha = float(rank)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise TypeError(f"LoRA: alpha must be a number, got {alpha!r}")
        self._set_fields(
            base=base if isinstance(base, Frozen) else Frozen(base),
            rank=rank,
            alpha=float(alpha),
            dropout=float(dropout),
            drop=Dropout(dropout) if dropout > 0 else None,
        )

    @property
    def scale(self) -> float:
        """``alpha / rank``."""
        return self.alpha / self.rank

    def init_params(self, key: torch.Tensor) -> Params:
        out, inp = _weight_shape(self.base.layer)
        bound = 1.0 / math.sqrt(inp)
        base_ps = self.base.init_params(key)
        return {
            "base": base_ps,
            "lora_A": init.uniform(key, self.rank, inp, low=-bound, high=bound),
            "lora_B": init.zeros(key, out, self.rank),
        }

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        y, base_st = self.base(x, ps["base"], st["base"])
        new_st = {**st, "base": base_st}
        h = x
        if self.drop is not None:
            h, new_st["drop"] = self.drop(x, ps.get("drop", {}), st["drop"])
        update = (h @ ps["lora_A"].T) @ ps["lora_B"].T
        return y + self.scale * update, new_st

    def delta(self, ps: Params) -> torch.Tensor:
        """The weight update ``(alpha / rank) * B @ A`` ``(out, in)``."""
        delta: torch.Tensor = self.scale * (ps["lora_B"] @ ps["lora_A"])
        return delta

    def describe_input_error(self, x: Any) -> str | None:
        return self.base.layer.describe_input_error(x)

    def extra_repr(self) -> str:
        parts = [f"rank={self.rank}", f"alpha={self.alpha:g}"]
        if self.dropout:
            parts.append(f"dropout={self.dropout}")
        return ", ".join(parts)


def merge(lora: LoRA, ps: Params, st: State) -> tuple[Layer, Params, State]:
    """Fold the update into the base weight: ``(base, {..., "weight": W + (alpha/r) B A},
    base_st)``. The merged layer's outputs equal ``lora``'s up to the rounding of the
    weight sum (measured 1e-16 relative in float64)."""
    frozen = st["base"]["frozen_params"]
    weight = frozen["weight"] + lora.delta(ps).to(frozen["weight"].dtype)
    return lora.base.layer, {**frozen, "weight": weight}, st["base"]["states"]


def unmerge(lora: LoRA, lora_ps: Params, ps: Params, st: State) -> tuple[LoRA, Params, State]:
    """Invert :func:`merge`: ``lora``'s parameters ``lora_ps`` (``A``, ``B``), the merged
    base's ``ps``/``st`` -> ``(lora, lora_ps, lora_st)`` with the base weight
    ``W - (alpha/r) B A`` (equal to the original within rounding of one subtraction)."""
    weight = ps["weight"] - lora.delta(lora_ps).to(ps["weight"].dtype)
    new_st: State = {"base": {"frozen_params": {**ps, "weight": weight}, "states": st}}
    return lora, dict(lora_ps), new_st


def _last(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def apply_lora(
    model: Layer,
    ps: Params,
    st: State,
    key: torch.Tensor,
    targets: Iterable[str] = ("q_proj", "v_proj"),
    rank: int = 8,
    alpha: float | None = None,
    dropout: float = 0.0,
    freeze_rest: bool = True,
) -> tuple[Layer, Params, State]:
    """Wrap every :class:`~lux_torch.layers.basic.Linear` of ``model`` whose name (last
    path component, e.g. ``"q_proj"``) is in ``targets`` in a :class:`LoRA`, keeping the
    trained weights (``lux.experimental.layer_map``); with ``freeze_rest`` freeze every
    other parameter too (:func:`lux_torch.freeze`), so that ``ps`` holds only the
    ``lora_A``/``lora_B`` tensors.

    Each LoRA's ``A`` is drawn from ``fold_in(key, crc32(path))`` in the dtype and on the
    device of the base weight; ``B`` is zero, so the returned model computes exactly what
    ``model`` did.

    Returns:
        ``(new_model, new_ps, new_st)``.

    Raises:
        ValueError: no layer matched ``targets``.
    """
    from ..core import child_key

    names = set(targets)
    hits: list[str] = []

    def wrap(layer: Layer, p: Any, s: Any, path: str) -> tuple[Layer, Any, Any]:
        if not (isinstance(layer, Linear) and _last(path) in names):
            return layer, p, s
        hits.append(path)
        lora = LoRA(layer, rank, alpha, dropout)
        fresh_ps, fresh_st = lora.init_params(child_key(key, path)), lora.init_state(key)
        w = p["weight"]  # A and B in the base weight's dtype and on its device
        new_ps = {
            "base": {},
            "lora_A": fresh_ps["lora_A"].to(w.dtype).to(w.device),
            "lora_B": fresh_ps["lora_B"].to(w.dtype).to(w.device),
        }
        new_st = {**fresh_st, "base": {"frozen_params": p, "states": s}}
        if "drop" in fresh_st:
            new_st["drop"] = lora.drop.init_state(child_key(key, path + ".drop"))  # type: ignore[union-attr]
        return lora, new_ps, new_st

    new_model, new_ps, new_st = layer_map(wrap, model, ps, st)
    if not hits:
        raise ValueError(f"apply_lora: no Linear layer named one of {sorted(names)} in the model")
    if not freeze_rest:
        return new_model, new_ps, new_st
    rest = [p for p in paths(new_ps) if _last(p) not in ("lora_A", "lora_B")]
    if not rest:
        return new_model, new_ps, new_st
    return freeze(new_model, new_ps, new_st, rest)


def merge_lora(model: Layer, ps: Params, st: State) -> tuple[Layer, Params, State]:
    """Merge every :class:`LoRA` of ``model`` into its base layer (and unfreeze a model
    that :func:`apply_lora` froze): the model of plain layers ``apply_lora`` started from,
    with ``W + (alpha / r) B A`` as weights."""
    if isinstance(model, Frozen):
        model, ps, st = unfreeze(model, ps, st)

    def fold(layer: Layer, p: Any, s: Any, path: str) -> tuple[Layer, Any, Any]:
        if isinstance(layer, LoRA):
            return merge(layer, p, s)
        return layer, p, s

    return layer_map(fold, model, ps, st)
