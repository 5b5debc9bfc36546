"""lux_torch: the Lux.jl design in PyTorch.

Layers are immutable descriptions; parameters ``ps`` and state ``st`` are explicit nested
dicts of tensors; every forward pass is a pure function ``y, st = model(x, ps, st)``::

    import torch, lux_torch as lux

    model = lux.Chain(lux.Linear(2, 16, activation=torch.tanh), lux.Linear(16, 1))
    ps, st = lux.setup(lux.random.key(0), model)
    y, st = model(torch.randn(8, 2), ps, st)
"""

from . import init, losses, ode, optim, random, training, tree
from .core import (
    Layer,
    StatefulLayer,
    apply,
    check_structure,
    init_params,
    init_state,
    param_count,
    setup,
    state_count,
    test_mode,
    train_mode,
)
from .display import summary
from .interop import load_state_dict, state_dict
from .layers import (
    AlphaDropout,
    Bilinear,
    BranchLayer,
    Chain,
    Conv1d,
    Conv2d,
    Conv3d,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
    Dropout,
    Dropout1d,
    Dropout2d,
    Dropout3d,
    Embedding,
    Ensemble,
    Flatten,
    Linear,
    Maxout,
    NoOpLayer,
    PairwiseFusion,
    Parallel,
    PixelShuffle,
    PixelUnshuffle,
    RepeatedLayer,
    Reshape,
    Scale,
    SelectDim,
    SkipConnection,
    Upsample,
    VariationalHiddenDropout,
    WrappedFunction,
    resample_masks,
)
from .ode import NeuralODE
from .training import TrainState, apply_gradients, compute_gradients, train_step

__version__ = "0.1.0.dev0"

__all__ = [
    "AlphaDropout",
    "Bilinear",
    "BranchLayer",
    "Chain",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "Embedding",
    "Ensemble",
    "Flatten",
    "Layer",
    "Linear",
    "Maxout",
    "NeuralODE",
    "NoOpLayer",
    "PairwiseFusion",
    "Parallel",
    "PixelShuffle",
    "PixelUnshuffle",
    "RepeatedLayer",
    "Reshape",
    "Scale",
    "SelectDim",
    "SkipConnection",
    "StatefulLayer",
    "TrainState",
    "Upsample",
    "VariationalHiddenDropout",
    "WrappedFunction",
    "__version__",
    "apply",
    "apply_gradients",
    "check_structure",
    "compute_gradients",
    "init",
    "init_params",
    "init_state",
    "load_state_dict",
    "losses",
    "ode",
    "optim",
    "param_count",
    "random",
    "resample_masks",
    "setup",
    "state_count",
    "state_dict",
    "summary",
    "test_mode",
    "train_mode",
    "train_step",
    "training",
    "tree",
]
