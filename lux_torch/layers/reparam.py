"""Reparametrizations of a wrapped layer's weights: ``WeightNorm`` and ``SpectralNorm``.

Both follow :mod:`torch.nn.utils.parametrizations` — its maths and its tensor names. A
wrapper's ``ps`` is the wrapped layer's ``ps`` with each reparametrized tensor replaced by
an entry under ``"parametrizations"``, exactly where torch's ``register_parametrization``
puts it, so ``lux_torch.state_dict(ps, st)`` has the names of a torch module's
``state_dict()`` after ``weight_norm(module)`` / ``spectral_norm(module)``::

    WeightNorm(Linear(20, 40))    ps: bias, parametrizations.weight.original0 (g),
                                      parametrizations.weight.original1 (v)
    SpectralNorm(Linear(20, 40))  ps: bias, parametrizations.weight.original
                                  st: parametrizations.weight.0._u, parametrizations.weight.0._v

(no ``layer.`` level: the wrapper stands where torch's parametrized module stands, so a
``Chain`` of wrapped layers maps onto an ``nn.Sequential`` of parametrized modules the
same way a ``Chain`` of plain layers does). Each call computes the effective tensors and
calls the wrapped layer with them; the wrapped layer's own state passes through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
import torch.nn.functional as F

from .. import random as lrandom
from .._graph import forward_ad_active
from ..core import Layer, Params, State, child_key, init_params
from ..tree import Static
from ._common import check_int
from .containers import as_layer
from .conv import ConvTransposeNd

__all__ = ["SpectralNorm", "WeightNorm"]


_PARAMETRIZATIONS = "parametrizations"
#: power iterations torch runs when it registers a spectral norm (``_SpectralNorm.__init__``)
_INITIAL_ITERATIONS = 15


# --------------------------------------------------------------------------- helpers


def _tensor_names(tree: Mapping[str, Any]) -> list[str]:
    return [k for k, v in tree.items() if isinstance(v, torch.Tensor)]


def _wrapped_params(owner: str, layer: Layer, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The wrapped layer's tensors called ``names`` (shapes only: built on the meta device)."""
    ps = init_params(0, layer, device="meta")
    available = _tensor_names(ps)
    out = {}
    for name in names:
        value = ps.get(name)
        if not isinstance(value, torch.Tensor):
            shown = ", ".join(repr(n) for n in available) or "none"
            raise ValueError(
                f"{owner}: {name!r} is not a parameter of the wrapped layer "
                f"{type(layer).__name__} (its parameter tensors: {shown})"
            )
        if not value.is_floating_point():
            raise TypeError(f"{owner}: parameter {name!r} is not floating-point ({value.dtype})")
        out[name] = value
    if _PARAMETRIZATIONS in ps and not isinstance(ps[_PARAMETRIZATIONS], Mapping):
        raise ValueError(f"{owner}: the wrapped layer has a parameter called {_PARAMETRIZATIONS!r}")
    return out


def _check_name(owner: str, what: str, name: Any) -> str:
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(
            f"{owner}: {what} must be the name of one of the wrapped layer's own parameter "
            f"tensors (a non-empty string without '.'), got {name!r}"
        )
    return name


def _insert(tree: Mapping[str, Any], entries: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """``tree`` with ``entries`` added under ``tree["parametrizations"]`` (kept last)."""
    out = {k: v for k, v in tree.items() if k != _PARAMETRIZATIONS}
    existing = dict(tree.get(_PARAMETRIZATIONS, {}))
    for name in entries:
        if name in existing:
            raise ValueError(f"{owner}: {name!r} is already reparametrized by the wrapped layer")
    out[_PARAMETRIZATIONS] = existing | dict(entries)
    return out


def _extract(tree: Mapping[str, Any], names: tuple[str, ...]) -> tuple[dict[str, Any], Any]:
    """Split ``tree`` into the wrapped layer's part and our ``parametrizations`` entries."""
    inner = {k: v for k, v in tree.items() if k != _PARAMETRIZATIONS}
    ours = tree[_PARAMETRIZATIONS]
    rest = {k: v for k, v in ours.items() if k not in names}
    if rest:
        inner[_PARAMETRIZATIONS] = rest
    return inner, ours


# --------------------------------------------------------------------------- WeightNorm


class WeightNorm(Layer):
    """Weight normalization (Salimans & Kingma, 2016) of a wrapped layer's parameters.

    ``torch.nn.utils.parametrizations.weight_norm`` as a pure wrapper: every parameter
    ``w`` named in ``names`` is replaced by a magnitude ``g`` and a direction ``v`` with

    ``w = g * v / ||v||``

    where the norm runs over every dimension except ``dim`` (``dim=None``: over the whole
    tensor, ``g`` a scalar). The forward computes ``w`` with ``torch._weight_norm`` (the
    op of torch's parametrization, so the results are torch's bit for bit; under forward-mode
    AD, where that op has no rule, the formula itself) and calls the wrapped layer with it.

    Arguments:
        layer: the layer whose parameters to reparametrize (a plain callable has none).
        names: names of the wrapped layer's own parameter tensors (keys of its ``ps``, such
            as ``"weight"``); a single string is accepted. Default ``("weight",)``.
        dim: the dimension that keeps a magnitude of its own (``0``: one per output
            channel/row, torch's default), ``0 <= dim < w.ndim`` for every named ``w``;
            ``None``: one magnitude for the whole tensor. (Negative dims are refused: in
            torch's ``weight_norm`` ``-1`` means the whole tensor, not the last dim.)

    Input:
        ``x``: whatever the wrapped layer accepts.

    Returns:
        The wrapped layer's output and state.

    **Parameters**
        The wrapped layer's parameters, except that each named ``w`` is replaced by
        ``parametrizations.<name>`` (torch's names and shapes)::

            {..., "parametrizations": {name: {"original0": g, "original1": v}}}

        - ``original0``: ``g``, shaped like ``w`` with every dim except ``dim`` of size 1
          (``()`` for ``dim=None``); initially ``norm_except_dim(w)``.
        - ``original1``: ``v``, shaped like ``w``; initially ``w``.

        So the initial effective weight is the wrapped layer's initial weight (same key;
        up to round-off), as after torch's ``weight_norm(module)``.

    **States**
        The wrapped layer's state, unchanged.

    Example:
        >>> layer = WeightNorm(Linear(20, 40))  # doctest: +SKIP
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> ps["parametrizations"]["weight"]["original0"].shape  # doctest: +SKIP
        torch.Size([40, 1])
    """

    layer: Layer
    names: str | tuple[str, ...] | list[str] = ("weight",)
    dim: int | None = 0

    def __post_init__(self) -> None:
        owner = "WeightNorm"
        layer = as_layer(owner, "layer", self.layer)
        names = (self.names,) if isinstance(self.names, str) else self.names
        if not isinstance(names, (tuple, list)) or not names:
            raise TypeError(f"{owner}: names must be a non-empty tuple of parameter names")
        names = tuple(_check_name(owner, "each of names", n) for n in names)
        if len(set(names)) != len(names):
            raise ValueError(f"{owner}: names has duplicates: {names}")
        if self.dim is not None:
            check_int(owner, "dim", self.dim, minimum=None)
        for name, w in _wrapped_params(owner, layer, names).items():
            if self.dim is not None and not 0 <= self.dim < w.ndim:
                raise ValueError(
                    f"{owner}: dim={self.dim} is out of range for {name!r} of shape "
                    f"{tuple(w.shape)}: expected 0 <= dim < {w.ndim}, or dim=None for the "
                    "norm of the whole tensor"
                )
        self._set_fields(layer=layer, names=names)

    @property
    def _torch_dim(self) -> int:
        return -1 if self.dim is None else self.dim  # torch's code for "the whole tensor"

    def init_params(self, key: torch.Tensor) -> Params:
        inner = self.layer.init_params(key)
        entries = {}
        for name in self.names:
            w = inner.pop(name)
            entries[name] = {
                "original0": torch.norm_except_dim(w, 2, self._torch_dim),
                "original1": w,
            }
        return _insert(inner, entries, "WeightNorm")

    def init_state(self, key: torch.Tensor) -> State:
        return self.layer.init_state(key)

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        inner, ours = _extract(ps, cast(tuple[str, ...], self.names))  # normalised
        for name in self.names:
            g, v = ours[name]["original0"], ours[name]["original1"]
            if forward_ad_active():  # torch's fused kernel has no forward-mode rule
                dims = [d for d in range(v.dim()) if self.dim is None or d != self.dim % v.dim()]
                norm = torch.linalg.vector_norm(v, dim=dims, keepdim=True) if dims else v.abs()
                inner[name] = v * (g / norm)
            else:
                inner[name] = torch._weight_norm(v, g, self._torch_dim)
        return self.layer(x, inner, st)

    def extra_repr(self) -> str:
        text = f"names={self.names!r}"
        return text if self.dim == 0 else f"{text}, dim={self.dim}"


# --------------------------------------------------------------------------- SpectralNorm


def _default_rows_dim(layer: Layer) -> int:
    """torch's ``spectral_norm(dim=None)``: 1 for the transposed convolutions, else 0."""
    return 1 if isinstance(layer, ConvTransposeNd) else 0


def _normalize(t: torch.Tensor, eps: float) -> torch.Tensor:
    return F.normalize(t, dim=0, eps=eps)


class SpectralNorm(Layer):
    """Spectral normalization (Miyato et al., 2018) of one of a wrapped layer's parameters.

    ``torch.nn.utils.parametrizations.spectral_norm`` as a pure wrapper: the parameter
    ``W`` named ``name`` is used as ``W / sigma(W)``, with the largest singular value
    ``sigma`` of ``W`` (reshaped to a matrix with ``dim`` first) estimated by power
    iteration. In training mode every call runs ``n_power_iterations`` of

    ``u = normalize(W v)``, ``v = normalize(W^T u)``

    from the vectors in ``st`` and returns the new vectors in the new state; in test mode
    the stored vectors are used as they are. Then ``sigma = u^T W v``. As in torch, ``u``
    and ``v`` are constants for autograd (the power iteration runs on ``W.detach()``), so
    the gradient is that of ``W / (u^T W v)`` with ``u``, ``v`` fixed — the true gradient
    once the iteration has converged. A 1-D ``W`` is simply ``normalize(W)`` (no state).

    Arguments:
        layer: the layer whose parameter to normalize.
        name: the name of one of the wrapped layer's own parameter tensors (default
            ``"weight"``).
        n_power_iterations: power iterations per training-mode call (>= 1).
        eps: ``> 0``, the floor of the norms in ``normalize`` (torch's ``F.normalize``).
        dim: the dimension of ``W`` that becomes the matrix's rows, ``-W.ndim <= dim <
            W.ndim``; ``None`` (default): 1 for the transposed convolutions, else 0 (torch).
            The layer stores the resolved value, ``0 <= dim < W.ndim``.

    Input:
        ``x``: whatever the wrapped layer accepts.

    Returns:
        The wrapped layer's output, and its state plus the updated power-iteration vectors.

    **Parameters**
        The wrapped layer's parameters with ``W`` moved to torch's name::

            {..., "parametrizations": {name: {"original": W}}}

    **States**
        The wrapped layer's state, plus for a ``W`` of 2 or more dims (torch's buffer
        names; ``h = W.shape[dim]``, ``w = W.numel() // h``)::

            {..., "parametrizations": {name: {"0": {"_u": u, "_v": v, "training": ...}}}}

        - ``_u``: ``(h,)``, the left singular vector estimate.
        - ``_v``: ``(w,)``, the right singular vector estimate.
        - ``training``: ``Static(True)``; :func:`lux_torch.test_mode` clears it (it sits
          with the vectors, as torch's ``_SpectralNorm`` module has its own ``training``).

        Initialised like torch: normal vectors, normalised, then 15 power iterations on the
        wrapped layer's initial ``W`` (drawn from the same key as ``ps``).

    Example:
        >>> layer = SpectralNorm(Linear(20, 40))  # doctest: +SKIP
        >>> ps, st = lux_torch.setup(0, layer)  # doctest: +SKIP
        >>> st["parametrizations"]["weight"]["0"]["_u"].shape  # doctest: +SKIP
        torch.Size([40])
    """

    layer: Layer
    name: str = "weight"
    n_power_iterations: int = 1
    eps: float = 1e-12
    dim: int | None = None

    def __post_init__(self) -> None:
        owner = "SpectralNorm"
        layer = as_layer(owner, "layer", self.layer)
        name = _check_name(owner, "name", self.name)
        check_int(owner, "n_power_iterations", self.n_power_iterations, minimum=1)
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)):
            raise TypeError(f"{owner}: eps must be a float, got {type(self.eps).__name__}")
        if not self.eps > 0:
            raise ValueError(f"{owner}: eps must be > 0, got {self.eps}")
        if self.dim is not None:
            check_int(owner, "dim", self.dim, minimum=None)
        w = _wrapped_params(owner, layer, (name,))[name]
        if w.ndim == 0:
            raise ValueError(f"{owner}: {name!r} is a scalar; spectral norm needs a 1-D or more")
        dim = _default_rows_dim(layer) if self.dim is None else self.dim
        if not -w.ndim <= dim < w.ndim:
            default = f" (the default for {type(layer).__name__})" if self.dim is None else ""
            raise ValueError(
                f"{owner}: dim={dim}{default} is out of range for {name!r} of shape "
                f"{tuple(w.shape)}: expected {-w.ndim} <= dim < {w.ndim}"
            )
        # resolved here, so that the call does not depend on the wrapped layer's type
        self._set_fields(layer=layer, eps=float(self.eps), dim=dim % w.ndim)

    def _matrix(self, weight: torch.Tensor) -> torch.Tensor:
        """``W`` as a matrix with ``dim`` first (torch's ``_reshape_weight_to_matrix``)."""
        dim = self.dim
        assert dim is not None  # resolved in __post_init__
        if dim != 0:
            weight = weight.permute(dim, *(d for d in range(weight.ndim) if d != dim))
        return weight.flatten(1)

    def _power_method(
        self, mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor, iterations: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mat = mat.detach()
        for _ in range(iterations):
            u = _normalize(torch.mv(mat, v), self.eps)
            v = _normalize(torch.mv(mat.H, u), self.eps)
        return u, v

    def init_params(self, key: torch.Tensor) -> Params:
        inner = self.layer.init_params(key)
        return _insert(inner, {self.name: {"original": inner.pop(self.name)}}, "SpectralNorm")

    def init_state(self, key: torch.Tensor) -> State:
        inner = self.layer.init_state(key)
        weight = self.layer.init_params(key)[self.name]  # the W that init_params starts from
        if weight.ndim == 1:
            return inner
        mat = self._matrix(weight)
        k = lrandom.split(child_key(key, f"{_PARAMETRIZATIONS}.{self.name}"))
        h, w = mat.shape
        u = lrandom.normal(k[0], (h,), dtype=mat.dtype, device=mat.device)
        v = lrandom.normal(k[1], (w,), dtype=mat.dtype, device=mat.device)
        u, v = _normalize(u, self.eps), _normalize(v, self.eps)
        u, v = self._power_method(mat, u, v, _INITIAL_ITERATIONS)
        entry = {"0": {"_u": u, "_v": v, "training": Static(True)}}
        return _insert(inner, {self.name: entry}, "SpectralNorm")

    def __call__(self, x: Any, ps: Params, st: State) -> tuple[Any, State]:
        names = (self.name,)
        inner_ps, ours = _extract(ps, names)
        weight = ours[self.name]["original"]
        if weight.ndim == 1:
            inner_ps[self.name] = _normalize(weight, self.eps)
            return self.layer(x, inner_ps, st)
        inner_st, vectors = _extract(st, names)
        entry = vectors[self.name]["0"]
        u, v = entry["_u"], entry["_v"]
        mat = self._matrix(weight)
        if entry["training"]:
            u, v = self._power_method(mat, u, v, self.n_power_iterations)
            entry = {"_u": u, "_v": v, "training": entry["training"]}
        sigma = torch.vdot(u, torch.mv(mat, v))
        inner_ps[self.name] = weight / sigma
        y, new_inner_st = self.layer(x, inner_ps, inner_st)
        return y, _insert(new_inner_st, {self.name: {"0": entry}}, "SpectralNorm")

    def extra_repr(self) -> str:
        parts = [f"name={self.name!r}"]
        if self.n_power_iterations != 1:
            parts.append(f"n_power_iterations={self.n_power_iterations}")
        if self.eps != 1e-12:
            parts.append(f"eps={self.eps:g}")
        if self.dim != _default_rows_dim(self.layer):
            parts.append(f"dim={self.dim}")
        return ", ".join(parts)
