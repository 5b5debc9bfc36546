"""Pure, optax-shaped optimizers on parameter trees.

An optimizer is a :class:`GradientTransformation`: a pair of pure functions

* ``init(ps) -> state`` builds the optimizer state, a tree of tensors (dicts/tuples of
  tensors, including 0-dim ``int64`` step counts), so it stacks, ``vmap`` s and
  ``torch.compile`` s exactly like ``ps``;
* ``update(grads, state, ps=None) -> (updates, new_state)`` turns gradients into updates.

:func:`apply_updates` adds the updates to the parameters. Nothing is mutated in place. The
aliases (:func:`sgd`, :func:`adam`, :func:`adamw`, :func:`rmsprop`, :func:`adagrad`,
:func:`lion`) are thin :func:`chain` s of small primitives and reproduce ``torch.optim``
step for step (Lion: the paper's algorithm). :func:`masked` and :func:`partition` apply
transformations to parts of the tree (e.g. to freeze a sub-model), and every learning
rate may be a schedule from :mod:`lux_torch.schedules` (re-exported here).

Leaf arithmetic uses ``torch._foreach_*`` on the flattened leaf lists, in place only on
the update's own temporaries (never on ``grads``, ``ps`` or a state), and falls back to
out-of-place per-leaf ops where a foreach kernel is unavailable (e.g. under ``vmap``) or
where autograd records the update (it stays differentiable). The built-in
transformations also have a private leaf-level form, so a :func:`chain` of them flattens
the gradients and the state once per update, skips members that do nothing
(``add_decayed_weights(0)``, ``trace(0)``) and folds scalar factors (bias correction,
learning rate, clipping) into a single multiplication; eager updates compute those
factors in Python floats, as ``torch.optim`` does, traced ones (``torch.compile``,
``vmap`` over states) with tensor ops.

Example:
    >>> ps = {"w": torch.ones(3)}
    >>> opt = adam(1e-2)
    >>> state = opt.init(ps)
    >>> updates, state = opt.update({"w": torch.ones(3)}, state, ps)
    >>> ps = apply_updates(ps, updates)
"""

from __future__ import annotations

from ..schedules import (
    constant_schedule,
    cosine_decay_schedule,
    exponential_decay,
    join_schedules,
    linear_schedule,
    one_cycle,
    piecewise_constant_schedule,
    polynomial_schedule,
    warmup_constant_schedule,
    warmup_cosine_decay_schedule,
)
from ._base import (
    FusedAdam,
    GradientTransformation,
    Reduced,
)
from .aliases import (
    adagrad,
    adam,
    adamw,
    lion,
    rmsprop,
    sgd,
    step,
)
from .transforms import (
    add_decayed_weights,
    apply_updates,
    centralize,
    chain,
    clip,
    clip_by_global_norm,
    ema,
    masked,
    partition,
    scale,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_lion,
    scale_by_rms,
    set_to_zero,
    trace,
)
from .wrappers import (
    apply_if_finite,
    inject_hyperparams,
    lookahead,
    multi_steps,
    set_hyperparams,
)

__all__ = [
    "FusedAdam",
    "GradientTransformation",
    "Reduced",
    "adagrad",
    "adam",
    "adamw",
    "add_decayed_weights",
    "apply_if_finite",
    "apply_updates",
    "centralize",
    "chain",
    "clip",
    "clip_by_global_norm",
    "constant_schedule",
    "cosine_decay_schedule",
    "ema",
    "exponential_decay",
    "inject_hyperparams",
    "join_schedules",
    "linear_schedule",
    "lion",
    "lookahead",
    "masked",
    "multi_steps",
    "one_cycle",
    "partition",
    "piecewise_constant_schedule",
    "polynomial_schedule",
    "rmsprop",
    "scale",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_rms",
    "set_hyperparams",
    "set_to_zero",
    "sgd",
    "step",
    "trace",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
]
