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

Each transformation reads like its rule: ``init`` builds a named state (``{"count", "mu",
"nu"}`` for :func:`scale_by_adam`), ``update`` applies the formula to all the leaves at
once with the leaf-list ops of :mod:`lux_torch.optim.foreach` (``torch._foreach_*``
kernels; per-leaf ops under ``vmap``), out of place on grads, ``ps`` and state. Eager
updates compute scalar factors (bias corrections) in Python floats, as ``torch.optim``
does, traced ones with tensor ops. The one fast path is chosen in :func:`step`, from an
optimizer's ``descriptor``: :func:`adam` / :func:`adamw` and :func:`sgd` (with a constant
learning rate or a schedule) run torch's fused Adam and SGD kernels there.

Wrappers: :func:`multi_steps` (gradient accumulation), :func:`lookahead`,
:func:`apply_if_finite` and :func:`inject_hyperparams` (hyperparameters in the state, set
with :func:`set_hyperparams`); :func:`ema` averages updates or, in
:class:`lux_torch.TrainState` (``ema=``), the parameters.

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
    FusedSGD,
    GradientTransformation,
    Reduced,
    described,
)
from .adaptive import (
    adabelief,
    lamb,
    lars,
    novograd,
    scale_by_belief,
    scale_by_novograd,
    scale_by_trust_ratio,
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
from .factored import (
    adafactor,
    clip_by_block_rms,
    relative_step_size,
    scale_by_factored_rms,
    scale_by_param_block_rms,
)
from .orthogonal import muon, newton_schulz, scale_by_muon
from .primal_averaging import (
    schedule_free,
    schedule_free_adamw,
    schedule_free_eval_params,
    schedule_free_sgd,
)
from .quasi_newton import LbfgsInfo, lbfgs, lbfgs_minimize
from .second_order import hutchinson_diag_hessian, scale_by_sophia, sophia
from .torch_like import (
    adadelta,
    adamax,
    asgd,
    asgd_averaged_params,
    nadam,
    radam,
    rprop,
    scale_by_adadelta,
    scale_by_adamax,
    scale_by_nadam,
    scale_by_radam,
    scale_by_rprop,
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
    "FusedSGD",
    "GradientTransformation",
    "LbfgsInfo",
    "Reduced",
    "adabelief",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "add_decayed_weights",
    "apply_if_finite",
    "apply_updates",
    "asgd",
    "asgd_averaged_params",
    "centralize",
    "chain",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "constant_schedule",
    "cosine_decay_schedule",
    "described",
    "ema",
    "exponential_decay",
    "hutchinson_diag_hessian",
    "inject_hyperparams",
    "join_schedules",
    "lamb",
    "lars",
    "lbfgs",
    "lbfgs_minimize",
    "linear_schedule",
    "lion",
    "lookahead",
    "masked",
    "multi_steps",
    "muon",
    "nadam",
    "newton_schulz",
    "novograd",
    "one_cycle",
    "partition",
    "piecewise_constant_schedule",
    "polynomial_schedule",
    "radam",
    "relative_step_size",
    "rmsprop",
    "rprop",
    "scale",
    "scale_by_adadelta",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_belief",
    "scale_by_factored_rms",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_muon",
    "scale_by_nadam",
    "scale_by_novograd",
    "scale_by_param_block_rms",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rprop",
    "scale_by_sophia",
    "scale_by_trust_ratio",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
    "set_hyperparams",
    "set_to_zero",
    "sgd",
    "sophia",
    "step",
    "trace",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
]
