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
from .dropout import Dropout

__all__ = [
    "Bilinear",
    "BranchLayer",
    "Chain",
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
