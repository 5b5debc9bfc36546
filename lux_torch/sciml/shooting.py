"""Multiple shooting for neural ODEs: :func:`multiple_shoot`, :class:`MultipleShootingLoss`.

Fitting a neural ODE to a long trajectory by one solve from its first point is hard: the
loss landscape of long rollouts is rugged and errors compound. *Direct multiple shooting*
(DiffEqFlux's ``multiple_shoot``; Turan & Jäschke 2021, arXiv:2109.06786) splits the
time grid into segments of ``group_size`` points, consecutive segments sharing one point,
solves every segment from its own initial value and penalises the mismatch between the
end of one segment and the start of the next::

    loss = sum_k loss(pred_k, data_k)
           + continuity_term * sum_{k>0} continuity_loss(pred_{k-1}[-1], start_k)

A segment starts from the data at its first time point (DiffEqFlux), or from a learnable
*shooting node* kept in ``ps`` (:class:`ShootingNODE`), which is also the value the
previous segment's end must meet.

Everything is time-first like :class:`~lux_torch.ode.NeuralODE`'s output: ``data`` has
shape ``(T, *state)`` (e.g. ``(T, batch, d)``) and ``t`` has ``T`` times::

    from lux_torch.sciml.shooting import MultipleShootingLoss

    objective = MultipleShootingLoss(group_size=5)
    ts = lux.TrainState(node, ps, st, lux.optim.adam(1e-2))
    ts, loss, stats = lux.train_step(objective, (data, t), ts)

Each segment is solved by the node with the segment's times given as data, ``node((y0, {"t": t}),
ps, st)`` (one solve per segment, see ``_solve_segment``); the configured ``t`` is not used.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..core import Layer
from ..display import short_repr
from ..layers._common import describe_shape
from .ode import NeuralODE

__all__ = [
    "MultipleShootingLoss",
    "ShootingNODE",
    "group_ranges",
    "initial_shooting_nodes",
    "mean_squared_error",
    "multiple_shoot",
    "squared_mismatch",
]

Params = dict[str, Any]
State = dict[str, Any]
PairLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mean_squared_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean((pred - target)**2)``: the default data loss of one segment."""
    return torch.mean((pred - target) ** 2)


def squared_mismatch(end: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """``sum((end - start)**2)``: the default continuity loss between two segments
    (DiffEqFlux's default is ``sum(abs, end - start)``; pass ``continuity_loss=`` for it)."""
    return torch.sum((end - start) ** 2)


def group_ranges(datasize: int, group_size: int) -> list[range]:
    """The index ranges of the segments, as DiffEqFlux's ``group_ranges`` (0-based).

    Segments of ``group_size`` points start every ``group_size - 1`` points, so consecutive
    segments share one point; the last one may be shorter (at least 2 points).

    Example: ``group_ranges(10, 3)`` is ``[range(0, 3), range(2, 5), range(4, 7),
    range(6, 9), range(8, 10)]``.

    Raises:
        ValueError: ``group_size`` is not an int in ``[2, datasize]``.
    """
    for name, value in (("datasize", datasize), ("group_size", group_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"group_ranges: {name} must be an int, got {value!r}")
    if not 2 <= group_size <= datasize:
        raise ValueError(
            f"group_ranges: group_size must be in [2, datasize] = [2, {datasize}] (a segment "
            f"needs 2 time points and cannot be longer than the data), got {group_size}"
        )
    return [range(i, min(datasize, i + group_size)) for i in range(0, datasize - 1, group_size - 1)]


def initial_shooting_nodes(data: torch.Tensor, group_size: int) -> torch.Tensor:
    """The data at the first point of every segment, shape ``(n_segments, *state)``: the
    usual initial value of ``ps["shooting_nodes"]`` of a :class:`ShootingNODE`."""
    if not isinstance(data, torch.Tensor) or data.ndim == 0:
        raise TypeError("initial_shooting_nodes: data must be a Tensor of shape (T, *state)")
    starts = [r.start for r in group_ranges(data.shape[0], group_size)]
    return data[starts].clone()


def _solve_segment(
    node: NeuralODE, ps: Params, st: State, y0: torch.Tensor, t: tuple[float, ...]
) -> tuple[torch.Tensor, State]:
    """One segment: ``node`` solved from ``y0`` at the times ``t``, given as data (the
    call-options form: no rebuild of the node per segment)."""
    times = torch.tensor(t, dtype=y0.dtype.to_real(), device=y0.device)
    ys, st = node((y0, {"t": times}), ps, st)
    return ys, st


def _check_node(where: str, node: Any) -> NeuralODE:
    if not isinstance(node, NeuralODE):
        raise TypeError(f"{where}: node must be a lux_torch NeuralODE, got {short_repr(node)}")
    if node.event_fn is not None or node.save_at != "all" or node.augment:
        raise ValueError(
            f"{where}: {short_repr(node)} must return the state at every time point "
            "(save_at='all', no event_fn, no augment) to be compared with the data"
        )
    return node


def _times(where: str, t: Any, n: int) -> tuple[float, ...]:
    if isinstance(t, torch.Tensor):
        if t.ndim != 1:
            raise ValueError(f"{where}: t must be one-dimensional, got shape {tuple(t.shape)}")
        t = t.detach().cpu().tolist()
    if not isinstance(t, Sequence) or isinstance(t, (str, bytes)):
        raise TypeError(f"{where}: t must be a 1-D tensor or a sequence of floats")
    times = tuple(float(v) for v in t)
    if len(times) != n:
        raise ValueError(
            f"{where}: t has {len(times)} time points but data has {n} (data is time-first, "
            "shape (T, *state))"
        )
    return times


def multiple_shoot(
    node: NeuralODE,
    ps: Params,
    st: State,
    data: torch.Tensor,
    t: torch.Tensor | Sequence[float],
    *,
    group_size: int,
    continuity_term: float = 100.0,
    loss: PairLoss = mean_squared_error,
    continuity_loss: PairLoss = squared_mismatch,
    shooting_nodes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, State, dict[str, Any]]:
    """The multiple-shooting loss of ``node`` on one trajectory (DiffEqFlux's ``multiple_shoot``).

    Arguments:
        node: the :class:`~lux_torch.ode.NeuralODE` (its configured ``t`` is not used).
        ps, st: its parameters and state.
        data: the observed trajectory, time first, shape ``(T, *state)``.
        t: its ``T`` time points (1-D tensor or sequence), strictly monotone.
        group_size: points per segment, in ``[2, T]``; segments overlap by one point
            (:func:`group_ranges`).
        continuity_term: the weight of the continuity penalty (DiffEqFlux's default 100).
        loss: ``loss(pred, target) -> scalar`` for one segment, summed over segments.
        continuity_loss: ``continuity_loss(end, start) -> scalar``, between the end of a
            segment's prediction and the start of the next segment.
        shooting_nodes: ``None`` to start segment ``k`` from ``data[group_ranges[k][0]]``;
            or a tensor ``(n_segments, *state)`` of learnable starts (its gradient flows).

    Returns:
        ``(loss, st, stats)``: the total loss (0-dim), the node's state after the last
        segment's solve (the state is threaded through the segments in order) and
        ``stats = {"data_loss": ..., "continuity_loss": ... (unweighted),
        "predictions": (pred_1, ..., pred_K)}`` with ``pred_k`` of shape
        ``(len(range_k), *state)``.

    Raises:
        TypeError / ValueError: ``group_size``, ``t``, ``data``, ``shooting_nodes`` or
            ``continuity_term`` invalid, or a node that does not return the state at every
            time point.
    """
    where = "multiple_shoot"
    node = _check_node(where, node)
    if not isinstance(data, torch.Tensor) or data.ndim == 0 or not data.is_floating_point():
        raise TypeError(f"{where}: data must be a floating-point Tensor of shape (T, *state)")
    times = _times(where, t, data.shape[0])
    if isinstance(continuity_term, bool) or not isinstance(continuity_term, (int, float)):
        raise TypeError(f"{where}: continuity_term must be a float, got {continuity_term!r}")
    if not (math.isfinite(continuity_term) and continuity_term >= 0):
        raise ValueError(f"{where}: continuity_term must be finite and >= 0, got {continuity_term}")
    ranges = group_ranges(data.shape[0], group_size)
    if shooting_nodes is None:
        starts = data[[r.start for r in ranges]]
    else:
        expected = (len(ranges), *data.shape[1:])
        if not isinstance(shooting_nodes, torch.Tensor) or shooting_nodes.shape != expected:
            raise ValueError(
                f"{where}: shooting_nodes must have shape (n_segments, *state) = {expected} "
                f"for {len(ranges)} segments of data {tuple(data.shape)}, got "
                f"{describe_shape(shooting_nodes)}"
            )
        starts = shooting_nodes
    predictions: list[torch.Tensor] = []
    data_loss = data.new_zeros(())
    continuity = data.new_zeros(())
    for k, r in enumerate(ranges):
        pred, st = _solve_segment(node, ps, st, starts[k], times[r.start : r.stop])
        data_loss = data_loss + loss(pred, data[r.start : r.stop])
        if k > 0:
            continuity = continuity + continuity_loss(predictions[-1][-1], starts[k])
        predictions.append(pred)
    total = data_loss + continuity_term * continuity
    stats = {
        "data_loss": data_loss,
        "continuity_loss": continuity,
        "predictions": tuple(predictions),
    }
    return total, st, stats


class ShootingNODE(Layer):
    """A :class:`~lux_torch.ode.NeuralODE` with learnable shooting nodes for multiple shooting.

    Called like the node it wraps (``y, st = m(y0, ps, st)`` solves ``node`` from ``y0``);
    :class:`MultipleShootingLoss` starts segment ``k`` from ``ps["shooting_nodes"][k]``.

    Arguments:
        node: the neural ODE.
        n_segments: the number of segments, ``len(group_ranges(T, group_size))``.
        state_shape: the shape of one state, ``data.shape[1:]``.

    **Parameters**
        - ``node``: the node's parameters.
        - ``shooting_nodes``: ``(n_segments, *state_shape)``, zeros; set it to
          :func:`initial_shooting_nodes` ``(data, group_size)`` before training.

    **States**
        - ``node``: the node's state.
    """

    node: NeuralODE
    n_segments: int
    state_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_node("ShootingNODE", self.node)
        if isinstance(self.n_segments, bool) or not isinstance(self.n_segments, int):
            raise TypeError(f"ShootingNODE: n_segments must be an int, got {self.n_segments!r}")
        if self.n_segments < 1:
            raise ValueError(f"ShootingNODE: n_segments must be >= 1, got {self.n_segments}")
        self._set_fields(state_shape=tuple(int(s) for s in self.state_shape))

    def init_params(self, key: torch.Tensor) -> Params:
        ps = super().init_params(key)
        ps["shooting_nodes"] = torch.zeros((self.n_segments, *self.state_shape))
        return ps

    def __call__(self, y0: Any, ps: Params, st: State) -> tuple[Any, State]:
        ys, new_st = self.node(y0, ps["node"], st["node"])
        return ys, {"node": new_st}


@dataclasses.dataclass(frozen=True)
class MultipleShootingLoss:
    """:func:`multiple_shoot` as a training objective for :func:`lux_torch.train_step`.

    ``objective(model, ps, st, (data, t)) -> (loss, st, stats)``, where ``model`` is a
    :class:`~lux_torch.ode.NeuralODE` (segments start from the data) or a
    :class:`ShootingNODE` (segments start from ``ps["shooting_nodes"]``). The fields are
    :func:`multiple_shoot`'s keyword arguments.
    """

    group_size: int
    continuity_term: float = 100.0
    loss: PairLoss = mean_squared_error
    continuity_loss: PairLoss = squared_mismatch

    def __post_init__(self) -> None:
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int):
            raise TypeError(
                f"MultipleShootingLoss: group_size must be an int, got {self.group_size!r}"
            )
        if self.group_size < 2:
            raise ValueError(
                f"MultipleShootingLoss: group_size must be >= 2, got {self.group_size}"
            )

    def __call__(
        self, model: Layer, ps: Params, st: State, batch: tuple[torch.Tensor, Any]
    ) -> tuple[torch.Tensor, State, dict[str, Any]]:
        data, t = batch
        kwargs: dict[str, Any] = {
            "group_size": self.group_size,
            "continuity_term": self.continuity_term,
            "loss": self.loss,
            "continuity_loss": self.continuity_loss,
        }
        if isinstance(model, ShootingNODE):
            loss, node_st, stats = multiple_shoot(
                model.node,
                ps["node"],
                st["node"],
                data,
                t,
                shooting_nodes=ps["shooting_nodes"],
                **kwargs,
            )
            return loss, {"node": node_st}, stats
        if not isinstance(model, NeuralODE):
            raise TypeError(
                "MultipleShootingLoss: the model must be a NeuralODE or a ShootingNODE, got "
                f"{short_repr(model)}"
            )
        return multiple_shoot(model, ps, st, data, t, **kwargs)
