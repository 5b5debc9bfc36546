"""``StackedChain``: ``n`` blocks of one architecture with stacked parameters, applied in
sequence and compiled once (scan over layers: Flax's ``nn.scan``, Equinox's
``filter_vmap`` init + ``lax.scan``).
"""

from __future__ import annotations

from typing import Any

import torch

from .. import tree as ltree
from ..core import Layer, Params, State, check_structure
from ._common import check_int
from ._scan import scan_active, stacked_calls
from .containers import as_layer, stacked_init

__all__ = ["StackedChain"]


class StackedChain(Layer):
    """``n`` copies of ``layer``, each with its own parameters and state, applied in
    sequence: ``Chain(layer, layer, ..., layer)`` with the ``n`` parameter sets *stacked*
    along a leading dimension.

    ::

        for i in range(n):
            x, st_i = layer(x, ps_i, st_i)     # ps_i = ps["layer"][...][i]

    Under ``torch.compile`` the loop is one ``scan`` (torch's higher-order operator, the
    primitive of ``jax.lax.scan``): the block is traced, differentiated and compiled once,
    so compile time hardly grows with ``n``. (Inside ``torch.func`` transforms under
    ``torch.compile``, and under ``make_fx``, the loop is unrolled: see
    :mod:`lux_torch.layers._scan`.) Eager, it is the unrolled loop over slices of the
    stacked tensors: the same operations as the :class:`~lux_torch.layers.containers.Chain`
    of ``n`` blocks given the same per-block parameters, so the same bits; compiled, the
    same maths (Inductor fuses within a block, not across blocks: equal to rounding).

    Arguments:
        layer: the block (or plain callable); its output must have the structure, shapes
            and dtypes of its input (it is the next block's input).
        n: number of blocks (>= 1).

    Input:
        ``x``: what ``layer`` accepts.

    Returns:
        The last block's output and the new state (every block's state, stacked).

    **Parameters**
        ``{"layer": ps}``: the block's parameters with every leaf stacked, shape
        ``(n, *leaf_shape)``; block ``i`` is initialised from ``lux.random.split(key, n)[i]``
        (independent initialisations, like the children of a Chain).

    **States**
        ``{"layer": st}``, stacked the same way (each block its own random key); static
        flags (``training``) are shared.

    Example:
        >>> model = StackedChain(Linear(8, 8, activation=torch.tanh), 4)  # doctest: +SKIP
        >>> ps, st = lux.setup(0, model)                                   # doctest: +SKIP
        >>> ps["layer"]["weight"].shape                                     # doctest: +SKIP
        torch.Size([4, 8, 8])
    """

    layer: Layer
    n: int

    def __post_init__(self) -> None:
        self._set_fields(layer=as_layer("StackedChain", "layer", self.layer))
        check_int("StackedChain", "n", self.n, minimum=1)

    def init_params(self, key: torch.Tensor) -> Params:
        return {"layer": stacked_init(self.layer.init_params, key, self.n)}

    def init_state(self, key: torch.Tensor) -> State:
        return {"layer": stacked_init(self.layer.init_state, key, self.n)}

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        if len(ps) != 1 or len(st) != 1:
            check_structure(self, ps, st)  # raises, naming the missing/unexpected keys
        p_leaves, p_spec = self._stacked_leaves(ps["layer"], "ps")
        s_leaves, s_spec = self._stacked_leaves(st["layer"], "st")
        if scan_active(x, ps, st):
            y, new_st = stacked_calls(self, self.layer, x, ps["layer"], st["layer"], self.n)
            return y, {"layer": new_st}
        p_slices = [leaf.unbind(0) for leaf in p_leaves]
        s_slices = [leaf.unbind(0) for leaf in s_leaves]
        states: list[State] = []
        for i in range(self.n):
            p_i = ltree.unflatten(p_spec, [s[i] for s in p_slices])
            s_i = ltree.unflatten(s_spec, [s[i] for s in s_slices])
            x, new_s = self.layer(x, p_i, s_i)
            states.append(new_s)
        return x, {"layer": ltree.stack(states) if ltree.leaves(states[0]) else states[0]}

    def _stacked_leaves(self, tree: Any, what: str) -> tuple[list[torch.Tensor], Any]:
        """``(leaves, spec)`` of a stacked tree, checked: a leading dimension of ``n``."""
        leaves, spec = ltree.flatten(tree)
        for i, leaf in enumerate(leaves):
            if not isinstance(leaf, torch.Tensor) or leaf.dim() == 0 or leaf.shape[0] != self.n:
                got = tuple(leaf.shape) if isinstance(leaf, torch.Tensor) else type(leaf).__name__
                raise ValueError(
                    f"StackedChain(n={self.n}): {what}['layer'].{ltree.paths(tree)[i]} should "
                    f"have a leading dimension of {self.n} (one slice per block), got {got}"
                )
        return leaves, spec

    def extra_repr(self) -> str:
        return f"n={self.n}"
