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
    Maxout,
    PairwiseFusion,
    Parallel,
    RepeatedLayer,
    SkipConnection,
)
from .dropout import Dropout

__all__ = [
    "Bilinear",
    "BranchLayer",
    "Chain",
    "Dropout",
    "Embedding",
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
