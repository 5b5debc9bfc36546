"""Built-in layers, one family per module (names and parameters follow ``torch.nn``)."""

from .basic import (
    Bilinear,
    Embedding,
    Flatten,
    Linear,
    NoOpLayer,
    Reshape,
    Scale,
    SelectDim,
    WrappedFunction,
)
from .containers import (
    BranchLayer,
    Chain,
    Ensemble,
    Maxout,
    PairwiseFusion,
    Parallel,
    RepeatedLayer,
    SkipConnection,
)
from .conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from .dropout import Dropout

__all__ = [
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
    "Embedding",
    "Ensemble",
    "Flatten",
    "Linear",
    "Maxout",
    "NoOpLayer",
    "PairwiseFusion",
    "Parallel",
    "RepeatedLayer",
    "Reshape",
    "Scale",
    "SelectDim",
    "SkipConnection",
    "WrappedFunction",
]
