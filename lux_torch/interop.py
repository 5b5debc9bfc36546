"""Interoperability with ``torch.nn`` conventions: flat ``state_dict`` s.

Built-in layers name their tensors like ``torch.nn`` (``weight``, ``bias``, ...), and
containers nest them by child name, so ``state_dict(ps, st)`` gives the dotted names a
PyTorch user expects (``"layer_1.weight"``) and a torch ``state_dict`` whose names follow
the same layout loads directly with :func:`load_state_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optree
import torch

from . import tree as ltree
from .core import Layer, Params, State, setup

__all__ = ["from_torch", "load_state_dict", "state_dict", "to_torch"]


def state_dict(ps: Params, st: State) -> dict[str, torch.Tensor]:
    """Flatten ``ps`` and ``st`` into one ``{"a.b.weight": tensor}`` dict.

    Parameters come first, then state tensors (random keys, running statistics). Mode
    flags are static and are not included. Tensors are shared, not copied.

    Raises:
        ValueError: if ``ps`` and ``st`` both hold an entry with the same dotted name.
    """
    flat = dict(ltree.flatten_with_paths(ps))
    for path, leaf in ltree.flatten_with_paths(st):
        if path in flat:
            raise ValueError(f"state_dict: {path!r} is both a parameter and a state entry")
        flat[path] = leaf
    return flat


def load_state_dict(
    model: Layer, sd: Mapping[str, torch.Tensor], *, strict: bool = True
) -> tuple[Params, State]:
    """Rebuild ``(ps, st)`` for ``model`` from a flat ``state_dict``.

    The structure comes from ``model`` (built on the meta device, so nothing is
    allocated); tensors come from ``sd`` as given (not copied or cast). Mode flags are
    set to training mode, as after :func:`lux_torch.setup`.

    Arguments:
        model: the layer whose structure to fill.
        sd: flat mapping of dotted names to tensors (e.g. from :func:`state_dict`, or a
            torch ``nn.Module.state_dict()`` with the same layout).
        strict: if ``False``, entries of ``sd`` the model does not have are ignored (missing
            and mis-shaped entries are still errors).

    Raises:
        KeyError: listing every missing entry, every unexpected entry (when ``strict``)
            and every entry whose shape differs from the model's.
    """
    template_ps, template_st = setup(0, model, device="meta")
    missing: list[str] = []
    mis_shaped: list[str] = []
    used: set[str] = set()

    def fill(template: Any) -> Any:
        flat, spec = optree.tree_flatten(template, namespace=ltree.NAMESPACE)
        out = []
        for path, leaf in zip(ltree.paths(template), flat, strict=True):
            if path not in sd:
                missing.append(path)
                out.append(leaf)
                continue
            used.add(path)
            value = sd[path]
            if not isinstance(value, torch.Tensor) or value.shape != leaf.shape:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                mis_shaped.append(f"{path}: expected {tuple(leaf.shape)}, got {got}")
            out.append(value)
        return optree.tree_unflatten(spec, out)

    ps, st = fill(template_ps), fill(template_st)
    unexpected = sorted(set(sd) - used) if strict else []
    if missing or unexpected or mis_shaped:
        lines = []
        if missing:
            lines.append(f"missing: {', '.join(missing)}")
        if unexpected:
            lines.append(f"unexpected: {', '.join(unexpected)}")
        if mis_shaped:
            lines.append(f"mis-shaped: {'; '.join(mis_shaped)}")
        raise KeyError(
            f"load_state_dict({type(model).__name__}): the state_dict does not match the "
            "model:\n  " + "\n  ".join(lines)
        )
    return ps, st


def from_torch(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("from_torch: not implemented yet")


def to_torch(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("to_torch: not implemented yet")
