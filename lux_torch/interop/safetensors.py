"""Weights in the `safetensors <https://huggingface.co/docs/safetensors>`_ format, mapped to
``ps``/``st`` by dotted name (the names of :func:`~lux_torch.interop.torch_nn.state_dict`).

``safetensors`` is an optional dependency (``pip install "lux_torch[lm]"``); it is imported
when a function here is called, never when lux_torch is imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from ..core import Layer, Params, State
from .torch_nn import load_state_dict, state_dict

__all__ = ["load_safetensors", "save_safetensors"]

PathLike = str | os.PathLike[str]


def _backend() -> Any:
    try:
        import safetensors.torch as backend
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "lux_torch.interop.safetensors needs the 'safetensors' package: "
            'pip install safetensors (or pip install "lux_torch[lm]")'
        ) from err
    return backend


def save_safetensors(
    path: PathLike, ps: Params, st: State | None = None, metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``ps`` (and ``st``'s tensors, e.g. running statistics and random keys) to a
    ``.safetensors`` file, one entry per dotted name (``"blocks_1.attn.q_proj.weight"``).

    Tensors are written as they are (dtype kept; made contiguous; a tensor that appears
    under two names is written twice, as safetensors stores no aliases). Mode flags are
    static and are not written.

    Arguments:
        path: the file to write.
        ps, st: the trees (``st`` optional).
        metadata: string pairs stored in the file's header.

    Raises:
        ValueError: ``ps`` and ``st`` hold the same dotted name.
        ImportError: ``safetensors`` is not installed.
    """
    backend = _backend()
    flat = state_dict(ps, {} if st is None else st)
    seen: set[tuple[int, int]] = set()
    out: dict[str, torch.Tensor] = {}
    for name, t in flat.items():
        t = t.detach().contiguous()
        ident = (t.untyped_storage().data_ptr(), int(t.storage_offset()))
        if t.numel() and ident in seen:
            t = t.clone()
        seen.add(ident)
        out[name] = t
    backend.save_file(out, os.fspath(path), metadata=None if metadata is None else dict(metadata))


def load_safetensors(
    path: PathLike,
    model: Layer,
    *,
    device: torch.device | str = "cpu",
    strict: bool = True,
    key: torch.Tensor | int = 0,
) -> tuple[Params, State]:
    """Read a ``.safetensors`` file into ``(ps, st)`` for ``model``, by dotted name.

    The structure comes from ``model``; missing entries, unexpected entries (with
    ``strict``) and entries of another shape raise
    :class:`~lux_torch.interop.torch_nn.StateDictError`, exactly as
    :func:`~lux_torch.interop.torch_nn.load_state_dict` (which this calls; random keys
    that the file lacks come from ``key``). Tensors keep the file's dtypes.

    Arguments:
        path: the file.
        model: the layer whose structure to fill.
        device: where to load the tensors.
        strict: refuse entries the model does not have.
        key: the seed or key of random keys that the file does not hold.

    Returns:
        ``(ps, st)`` in training mode.

    Raises:
        StateDictError: the file does not match the model (every problem listed).
        ImportError: ``safetensors`` is not installed.
    """
    backend = _backend()
    sd = backend.load_file(os.fspath(path), device=str(device))
    return load_state_dict(model, sd, strict=strict, key=key)
