"""Parameter manipulation (Lux's ``Experimental`` module): freeze, share, map, debug.

Four tools that rewrite a model and its trees without touching any built-in layer:

- :func:`freeze` / :func:`unfreeze`: move some (or all) parameters of a layer into its
  *state*, so that gradients, optimizers and :func:`lux_torch.train_step` never see them
  (the :class:`Frozen` wrapper, Lux's ``FrozenLayer``).
- :func:`share_parameters`: tie parameters by their dotted paths. Through the
  :class:`Shared` wrapper every tied group is stored once, so its gradient is the sum of
  the gradients of its uses and optimizer updates keep it tied.
- :func:`layer_map`: rebuild a model layer by layer, ``fn(layer, ps, st, path)``.
- :func:`debug`: a copy of the model whose every layer checks its inputs, outputs and the
  gradients of its backward for NaN/Inf and names its path (Lux's ``DebugLayer``).

One module per tool: :mod:`.frozen`, :mod:`.shared`, :mod:`.mapping`, :mod:`.debugging`
(and :mod:`._paths`, the dotted-path helpers the first two share); every public name is
importable from here, ``lux_torch.experimental``.

Paths are the dotted names of :func:`lux_torch.tree.paths`: ``"layer_1.weight"`` is a
tensor, ``"layer_1"`` the whole subtree of the child ``layer_1``.

Example:
    >>> model = lux.Chain(lux.Linear(2, 16, activation=torch.tanh), lux.Linear(16, 1))
    >>> frozen = lux.freeze(model, "layer_1")          # layer_1 is not trained
    >>> ps, st = lux.setup(0, frozen)                   # ps: only layer_2's tensors
    >>> tied = lux.experimental.Shared(lux.Chain(lux.Linear(4, 4), lux.Linear(4, 4)),
    ...                                [("layer_1", "layer_2")])
"""

import importlib
from typing import TYPE_CHECKING, Any

from .frozen import Frozen, freeze, unfreeze
from .mapping import layer_map
from .shared import Shared, share_parameters

if TYPE_CHECKING:
    from .debugging import DebugLayer, debug

__all__ = [
    "DebugLayer",
    "Frozen",
    "Shared",
    "debug",
    "freeze",
    "layer_map",
    "share_parameters",
    "unfreeze",
]


def __getattr__(name: str) -> Any:
    """:mod:`.debugging` is imported at first use: it needs ``torch._dynamo`` (for
    ``torch.compiler.disable``), which takes seconds to import."""
    if name not in ("DebugLayer", "debug"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".debugging", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
