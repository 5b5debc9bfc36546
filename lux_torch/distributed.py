"""Data-parallel training on ``torch.distributed`` (Lux's ``DistributedUtils``).

Every process (a *rank*) holds a full copy of ``ps``/``st`` and trains on its own shard of
each batch; a :func:`DistributedOptimizer` averages the gradients across ranks before the
optimizer update, so all ranks take the same step and their parameters stay identical.
All communication is ``torch.distributed`` (gloo on CPU, NCCL on CUDA); nothing here
implements a transport of its own.

Launch with ``torchrun``::

    torchrun --nproc_per_node=2 train.py

and in ``train.py``::

    import lux_torch as lux
    from lux_torch import distributed as dist

    dist.initialize()                               # reads torchrun's environment
    ps, st = lux.setup(lux.random.key(0), model)
    ps, st = dist.synchronize(ps, st)               # every rank starts from rank 0's values
    ts = lux.TrainState(model, ps, st, dist.DistributedOptimizer(lux.optim.adam(1e-3)))
    for epoch in range(epochs):
        idx = dist.shard_indices(len(x), shuffle=True, seed=0, epoch=epoch)
        for batch in idx.split(batch_size // dist.world_size()):
            ts, loss, _ = lux.train_step(lux.losses.MSELoss(), (x[batch], y[batch]), ts)
    dist.shutdown()

The loss must be a *mean* over the batch: the average over ranks of per-shard mean
gradients is then the gradient of the mean over the whole (global) batch.

**Bucketing.** :func:`all_reduce` and :func:`broadcast` group a tree's leaves by dtype
and device, copy each group into one contiguous buffer and run one collective per slice
of about ``bucket_bytes`` (25 MB by default, DDP's bucket size): a group of ``b`` bytes
costs ``ceil(b / bucket_bytes)`` collective calls however many leaves it has (a leaf may
straddle two buckets). All slices are launched asynchronously, then waited for.

**Purity.** The collectives work on those buffers, never on the input tensors: the inputs
are not modified, and the returned tree's leaves are views into fresh buffers.

**Single process.** Without an initialized process group (a plain ``python train.py``),
or with a world of one rank, every collective returns its input tree itself,
:func:`rank` is 0 and :func:`world_size` is 1: the same script runs with and without
``torchrun``.

**Compiled steps.** ``lux.train_step(..., compile=True)`` traces the whole step with
``make_fx``; while tracing (``make_fx``, fake tensors or ``torch.compile``) the
collectives are issued as ``torch.distributed._functional_collectives`` (out of place,
``_c10d_functional.all_reduce`` in the graph, lowered by Inductor), so the averaging is
part of the compiled graph. Every rank traces and compiles its own copy of the graph.

**Failures.** A rank that fails (raises, exits, or stops calling collectives) makes the
other ranks' next collective fail: at once where the failed process is gone (its
connection closes), else when the process group's ``timeout`` (see :func:`initialize`)
expires. The error is re-raised as a ``RuntimeError`` naming this function, this rank and
the likely cause.

**With** :func:`lux_torch.train_step`, the gradients and the loss are averaged first, and
the finiteness check (``check_finite=True``) looks at the averages: a NaN or Inf on any
rank makes every rank raise ``FloatingPointError`` in the same step, with no update
applied anywhere, so ranks that catch it and skip the batch stay identical. The loss that
``train_step`` returns is the mean over the ranks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from ._graph import tracing
from .optim import GradientTransformation
from .optim._base import Reduced, described
from .tree import flatten, paths, unflatten

__all__ = [
    "DistributedOptimizer",
    "all_reduce",
    "broadcast",
    "initialize",
    "is_initialized",
    "local_rank",
    "rank",
    "sampler",
    "shard",
    "shard_indices",
    "shutdown",
    "synchronize",
    "world_size",
]

Tree = Any
Group = dist.ProcessGroup | None

BUCKET_BYTES = 25 * 1024 * 1024  # DDP's default bucket_cap_mb=25
_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_OPS = {
    "mean": dist.ReduceOp.SUM,  # summed, then divided by the world size
    "sum": dist.ReduceOp.SUM,
    "max": dist.ReduceOp.MAX,
    "min": dist.ReduceOp.MIN,
    "product": dist.ReduceOp.PRODUCT,
}
_FUNCTIONAL_OPS = {"mean": "sum", "sum": "sum", "max": "max", "min": "min", "product": "product"}


# ------------------------------------------------------------------------ process group


def is_initialized() -> bool:
    """True when ``torch.distributed`` is available and its default process group exists."""
    return dist.is_available() and dist.is_initialized()


def initialize(backend: str | None = None, *, timeout: timedelta | None = None) -> None:
    """Initialize the default process group from ``torchrun``'s environment.

    Reads ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` (and ``LOCAL_RANK``),
    as set by ``torchrun``. Idempotent: a second call (or a call after the user's own
    ``torch.distributed.init_process_group``) does nothing. Where none of these variables
    is set (a plain ``python train.py``) it does nothing either: the script then runs as a
    single process (:func:`world_size` is 1, every collective is the identity).

    Arguments:
        backend: ``"gloo"``, ``"nccl"``, or any backend string of
            ``torch.distributed.init_process_group``. ``None``: ``"cpu:gloo,cuda:nccl"``
            when CUDA and NCCL are available (CUDA tensors go through NCCL, CPU tensors
            through gloo), else ``"gloo"``. With NCCL the current CUDA device is set to
            ``cuda:{local_rank()}``.
        timeout: how long a collective waits for the other ranks before it fails (a
            ``datetime.timedelta``); ``None``: torch's default (10 minutes for NCCL, 30 for
            gloo). Bounds how long the other ranks wait when one rank fails without exiting.

    Raises:
        RuntimeError: only some of the variables are set (names the missing ones), or
            ``torch.distributed`` is not available in this build of torch.
        ValueError: the process group is already initialized with another ``backend``.

    Example:
        >>> from datetime import timedelta
        >>> lux.distributed.initialize(timeout=timedelta(seconds=60))
    """
    if not dist.is_available():
        raise RuntimeError(
            "lux_torch.distributed.initialize: torch.distributed is not available in this "
            "build of torch"
        )
    if dist.is_initialized():
        current = dist.get_backend()
        if backend is not None and backend != current:
            raise ValueError(
                f"lux_torch.distributed.initialize: the process group is already "
                f"initialized with backend {current!r}, not {backend!r}"
            )
        return
    present = [k for k in _ENV if k in os.environ]
    if not present:
        return
    missing = [k for k in _ENV if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"lux_torch.distributed.initialize: environment variables {missing} are not set "
            f"(found {present}); launch with torchrun (e.g. torchrun --nproc_per_node=2 "
            "train.py), which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT"
        )
    cuda = torch.cuda.is_available() and dist.is_nccl_available()
    if backend is None:
        backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
    if "nccl" in backend and torch.cuda.is_available():
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
    dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)


def shutdown() -> None:
    """Destroy the default process group (``torch.distributed.destroy_process_group``) if
    it exists; call it once at the end of a distributed script. Does nothing otherwise."""
    if is_initialized():
        dist.destroy_process_group()


def rank(group: Group = None) -> int:
    """This process's rank in ``group`` (default: the whole world); 0 when not initialized."""
    return dist.get_rank(group) if is_initialized() else 0


def world_size(group: Group = None) -> int:
    """Number of ranks in ``group`` (default: the whole world); 1 when not initialized."""
    return dist.get_world_size(group) if is_initialized() else 1


def local_rank() -> int:
    """This process's rank on its node (``torchrun``'s ``LOCAL_RANK``); 0 when not set."""
    return int(os.environ.get("LOCAL_RANK", "0"))


# ----------------------------------------------------------------------------- buckets


def _leaves(tree: Tree, fn: str) -> tuple[list[torch.Tensor], Any]:
    leaves, spec = flatten(tree)
    for i, leaf in enumerate(leaves):
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(
                f"lux_torch.distributed.{fn}: every leaf must be a tensor, got "
                f"{type(leaf).__name__} at {paths(tree)[i]}"
            )
    return leaves, spec


def _groups(leaves: Sequence[torch.Tensor]) -> list[list[int]]:
    """Indices of the leaves grouped by (dtype, device), in order of first appearance."""
    groups: dict[tuple[torch.dtype, torch.device], list[int]] = {}
    for i, leaf in enumerate(leaves):
        groups.setdefault((leaf.dtype, leaf.device), []).append(i)
    return list(groups.values())


def _check_bucket_bytes(bucket_bytes: int, fn: str) -> None:
    if not isinstance(bucket_bytes, int) or bucket_bytes <= 0:
        raise ValueError(
            f"lux_torch.distributed.{fn}: bucket_bytes must be a positive int, got {bucket_bytes!r}"
        )


def _collective(
    tree: Tree,
    fn: str,
    bucket_bytes: int,
    eager: Callable[[torch.Tensor], Any],
    traced: Callable[[torch.Tensor], torch.Tensor],
    finish: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Tree:
    """Run a collective over ``tree`` bucket by bucket; return the new tree.

    ``eager(bucket)`` launches an in-place asynchronous collective on a slice of a fresh
    buffer and returns its work handle; ``traced(bucket)`` is the out-of-place functional
    form used while tracing. ``finish(buffer)`` post-processes a reduced buffer.
    """
    leaves, spec = _leaves(tree, fn)
    out: list[torch.Tensor] = list(leaves)
    pending: list[tuple[list[int], torch.Tensor]] = []
    works: list[Any] = []
    is_traced = tracing()
    for idx in _groups(leaves):
        flat = torch.cat([leaves[i].reshape(-1) for i in idx])  # a fresh buffer
        if flat.numel() == 0:
            pending.append((idx, flat))
            continue
        chunk = max(1, bucket_bytes // flat.element_size())
        if is_traced:
            flat = torch.cat([traced(b) for b in flat.split(chunk)])
        else:
            try:
                works += [eager(b) for b in flat.split(chunk)]
            except RuntimeError as error:
                raise _failure(fn, error) from error
        pending.append((idx, flat))
    try:
        for work in works:
            work.wait()
    except RuntimeError as error:
        raise _failure(fn, error) from error
    for idx, flat in pending:
        if finish is not None:
            flat = finish(flat)
        parts = flat.split([leaves[i].numel() for i in idx])
        for i, part in zip(idx, parts, strict=True):
            out[i] = part.view(leaves[i].shape)
    return unflatten(spec, out)


def _failure(fn: str, error: BaseException) -> RuntimeError:
    return RuntimeError(
        f"lux_torch.distributed.{fn}: the collective failed on rank {rank()} of "
        f"{world_size()}; another rank probably failed, exited or stopped calling "
        f"collectives (or the process group's timeout expired). Cause: "
        f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}"
    )


def _functional() -> Any:
    import torch.distributed._functional_collectives as funcol

    return funcol


def all_reduce(
    tree: Tree, op: str = "mean", *, group: Group = None, bucket_bytes: int = BUCKET_BYTES
) -> Tree:
    """Reduce every leaf of ``tree`` across the ranks of ``group``, bucketed.

    Leaves are packed by dtype and device into contiguous buffers; each slice of about
    ``bucket_bytes`` is one ``torch.distributed.all_reduce`` call (a dtype/device group of
    ``b`` bytes costs ``ceil(b / bucket_bytes)`` calls). The inputs are not modified.
    Every rank must call it with a tree of the same structure, shapes and dtypes.

    Arguments:
        tree: a tree of tensors (e.g. gradients).
        op: ``"mean"`` (floating or complex leaves only), ``"sum"``, ``"max"``, ``"min"``
            or ``"product"``.
        group: the process group; ``None``: all ranks.
        bucket_bytes: the size of a bucket in bytes (default 25 MB, as DDP).

    Returns:
        A new tree with the reduced values, equal on every rank; ``tree`` itself when not
        initialized or with a single rank.

    Raises:
        ValueError: unknown ``op`` or a non-positive ``bucket_bytes``.
        TypeError: a leaf is not a tensor, or ``"mean"`` of an integer or bool leaf.
        RuntimeError: the collective failed (another rank failed, or the timeout expired).

    Example:
        >>> grads = lux.distributed.all_reduce(grads)  # the mean over ranks
    """
    if op not in _OPS:
        raise ValueError(
            f"lux_torch.distributed.all_reduce: op must be one of {sorted(_OPS)}, got {op!r}"
        )
    _check_bucket_bytes(bucket_bytes, "all_reduce")
    n = world_size(group)
    if n == 1:
        return tree
    if op == "mean":
        for i, leaf in enumerate(_leaves(tree, "all_reduce")[0]):
            if not (leaf.is_floating_point() or leaf.is_complex()):
                raise TypeError(
                    f"lux_torch.distributed.all_reduce: op='mean' needs floating-point or "
                    f"complex leaves, got {leaf.dtype} at {paths(tree)[i]}; use op='sum'"
                )
    reduce_op, name = _OPS[op], _FUNCTIONAL_OPS[op]
    wgroup = group if group is not None else dist.group.WORLD

    def eager(bucket: torch.Tensor) -> Any:
        return dist.all_reduce(bucket, op=reduce_op, group=group, async_op=True)

    def traced(bucket: torch.Tensor) -> torch.Tensor:
        return _functional().all_reduce(bucket, name, wgroup)  # type: ignore[no-any-return]  # lazy module

    def mean(flat: torch.Tensor) -> torch.Tensor:
        return flat.div_(n) if not tracing() else flat / n

    return _collective(
        tree, "all_reduce", bucket_bytes, eager, traced, mean if op == "mean" else None
    )


def broadcast(
    tree: Tree, src: int = 0, *, group: Group = None, bucket_bytes: int = BUCKET_BYTES
) -> Tree:
    """Every rank gets rank ``src``'s values of ``tree``, bucketed as :func:`all_reduce`.

    Arguments:
        tree: a tree of tensors with the same structure, shapes and dtypes on every rank
            (the values of the other ranks are ignored).
        src: the global rank that sends.
        group: the process group; ``None``: all ranks.
        bucket_bytes: the size of a bucket in bytes (default 25 MB).

    Returns:
        A new tree with rank ``src``'s values (a copy on ``src`` too; the input is not
        modified); ``tree`` itself when not initialized or with a single rank.

    Raises:
        ValueError: a non-positive ``bucket_bytes``.
        TypeError: a leaf is not a tensor.
        RuntimeError: the collective failed (another rank failed, or the timeout expired).

    Example:
        >>> ps = lux.distributed.broadcast(ps)
    """
    _check_bucket_bytes(bucket_bytes, "broadcast")
    if world_size(group) == 1:
        return tree
    wgroup = group if group is not None else dist.group.WORLD

    def eager(bucket: torch.Tensor) -> Any:
        return dist.broadcast(bucket, src, group=group, async_op=True)

    def traced(bucket: torch.Tensor) -> torch.Tensor:
        return _functional().broadcast(bucket, src, wgroup)  # type: ignore[no-any-return]  # lazy module

    return _collective(tree, "broadcast", bucket_bytes, eager, traced)


def _signature(tree: Tree) -> list[tuple[str, tuple[int, ...], str]]:
    leaves, _ = flatten(tree)
    return [
        (p, tuple(t.shape), str(t.dtype)) if isinstance(t, torch.Tensor) else (p, (), "?")
        for p, t in zip(paths(tree), leaves, strict=True)
    ]


def synchronize(
    ps: Tree, st: Tree, *, src: int = 0, group: Group = None, bucket_bytes: int = BUCKET_BYTES
) -> tuple[Tree, Tree]:
    """Give every rank rank ``src``'s ``ps`` and ``st`` (call once, at start-up).

    First checks (one small ``all_gather_object``) that every rank has the same tree
    paths, shapes and dtypes, so a model built differently on one rank is an error rather
    than a hang; then broadcasts both trees together (:func:`broadcast`).

    Arguments:
        ps: the parameter tree.
        st: the state tree (random keys included: every rank then draws the same dropout
            masks unless it folds its rank into the key, ``lux.random.fold_in(key,
            rank())``).
        src: the global rank whose values everyone takes.
        group: the process group; ``None``: all ranks.
        bucket_bytes: the size of a bucket in bytes.

    Returns:
        ``(ps, st)``: new trees (the inputs are not modified); the inputs themselves when
        not initialized or with a single rank.

    Raises:
        ValueError: the trees differ between ranks (names the rank and the first path).
        RuntimeError: the collective failed.

    Example:
        >>> ps, st = lux.distributed.synchronize(ps, st)
    """
    if world_size(group) == 1:
        return ps, st
    mine = (_signature(ps), _signature(st))
    every: list[Any] = [None] * world_size(group)
    try:
        dist.all_gather_object(every, mine, group=group)
    except RuntimeError as error:
        raise _failure("synchronize", error) from error
    for r, theirs in enumerate(every):
        if theirs != mine:
            which = "ps" if theirs[0] != mine[0] else "st"
            k = 0 if which == "ps" else 1
            diff = next(
                (f"{a} vs {b}" for a, b in zip(mine[k], theirs[k], strict=False) if a != b),
                f"{len(mine[k])} vs {len(theirs[k])} leaves",
            )
            raise ValueError(
                f"lux_torch.distributed.synchronize: {which} on rank {rank(group)} and on "
                f"rank {r} of the group differ (path, shape, dtype): {diff}; build the "
                "same model on every rank"
            )
    return broadcast((ps, st), src, group=group, bucket_bytes=bucket_bytes)  # type: ignore[no-any-return]  # a pair in, a pair out


# --------------------------------------------------------------------------- optimizer


def DistributedOptimizer(
    optimizer: GradientTransformation,
    *,
    group: Group = None,
    bucket_bytes: int = BUCKET_BYTES,
) -> GradientTransformation:
    """Wrap a :mod:`lux_torch.optim` transformation so that it first averages the gradients
    across ranks (:func:`all_reduce` with ``op="mean"``, bucketed).

    The result is an ordinary :class:`~lux_torch.optim.GradientTransformation` with the
    state of ``optimizer``: :class:`lux_torch.TrainState`, :func:`lux_torch.train_step`,
    :func:`lux_torch.apply_gradients` and :func:`lux_torch.optim.step` use it unchanged,
    on every path: eager, ``donate=True`` (the fused Adam kernel of ``adam``/``adamw``
    runs on the averaged gradients) and ``compile=True`` (the averaging is traced into the
    compiled graph as functional collectives). Every rank must call the update once per
    step, with gradients of the same structure.

    Wrap the whole optimizer (e.g. a ``chain`` with ``clip_by_global_norm``) so that
    clipping and every other transformation see the averaged gradients. ``torch.optim``
    factories are not transformations: use ``lux.optim`` ones.

    Arguments:
        optimizer: the transformation to wrap.
        group: the process group to average over; ``None``: all ranks.
        bucket_bytes: the bucket size of the all-reduce in bytes (default 25 MB).

    Returns:
        A :class:`~lux_torch.optim.GradientTransformation`; single-process (not
        initialized), it behaves exactly like ``optimizer``.

    Raises:
        TypeError: ``optimizer`` is not a ``GradientTransformation``.

    Example:
        >>> opt = lux.distributed.DistributedOptimizer(lux.optim.adam(1e-3))
        >>> ts = lux.TrainState(model, ps, st, opt)
    """
    if not isinstance(optimizer, GradientTransformation):
        raise TypeError(
            "lux_torch.distributed.DistributedOptimizer: optimizer must be a "
            "lux_torch.optim.GradientTransformation (e.g. lux.optim.adam(1e-3)), got "
            f"{type(optimizer).__name__}"
        )
    _check_bucket_bytes(bucket_bytes, "DistributedOptimizer")
    inner_update = optimizer.update

    def average(grads: Tree) -> Tree:
        return all_reduce(grads, "mean", group=group, bucket_bytes=bucket_bytes)

    def update(grads: Tree, state: Any, ps: Tree = None) -> tuple[Tree, Any]:
        return inner_update(average(grads), state, ps)

    # lux.optim.step and train_step read the descriptor: they reduce the gradients (train_step
    # before its finiteness check, so that a NaN on one rank stops every rank), then run
    # the inner optimizer's fast path or update, so the gradients are averaged once
    update.__qualname__ = update.__name__ = "DistributedOptimizer.update"
    return described(GradientTransformation(optimizer.init, update), Reduced(average, optimizer))


# ------------------------------------------------------------------------- data shards


def shard_indices(
    n: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    drop_last: bool = False,
    group: Group = None,
) -> torch.Tensor:
    """This rank's indices into a dataset of ``n`` examples, exactly as
    ``torch.utils.data.distributed.DistributedSampler`` yields them.

    Rank ``r`` of ``w`` gets indices ``r, r + w, r + 2w, ...`` of a (shuffled, for
    ``shuffle=True``) ordering of ``range(n)``; the ordering depends only on ``seed`` and
    ``epoch`` (a local ``torch.Generator``, no global RNG), so the shards of one epoch are
    disjoint and cover the dataset. Without ``drop_last`` the ordering is padded with its
    first indices to a multiple of ``w`` (every rank gets ``ceil(n / w)`` indices); with
    it, the tail is dropped (``n // w`` each).

    Arguments:
        n: dataset size.
        shuffle: shuffle (differently every epoch).
        seed: shuffling seed, the same on every rank.
        epoch: the epoch number (``DistributedSampler.set_epoch``).
        drop_last: drop the tail rather than padding.
        group: the process group whose ranks share the data; ``None``: all ranks.

    Returns:
        A 1-D ``int64`` tensor of indices (``range(n)`` or its permutation with one rank).

    Raises:
        ValueError: ``n`` is negative.

    Example:
        >>> idx = lux.distributed.shard_indices(len(x), shuffle=True, epoch=epoch)
        >>> for batch in idx.split(32):
        ...     ts, loss, _ = lux.train_step(loss_fn, (x[batch], y[batch]), ts)
    """
    if n < 0:
        raise ValueError(f"lux_torch.distributed.shard_indices: n must be >= 0, got {n}")
    s = _sampler(range(n), shuffle, seed, drop_last, group)
    s.set_epoch(epoch)
    return torch.tensor(list(s), dtype=torch.int64)


def sampler(
    dataset: Dataset[Any] | Sequence[Any],
    *,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    group: Group = None,
) -> DistributedSampler[Any]:
    """A ``DistributedSampler`` over ``dataset`` for this rank, for a ``DataLoader``.

    Works also single-process (one replica, rank 0). Call ``sampler.set_epoch(epoch)``
    at the start of every epoch so that shuffling differs between epochs.

    Arguments:
        dataset: a map-style dataset (anything with ``len``).
        shuffle, seed, drop_last: as in ``DistributedSampler`` (see :func:`shard_indices`).
        group: the process group whose ranks share the data; ``None``: all ranks.

    Returns:
        ``torch.utils.data.distributed.DistributedSampler(dataset, num_replicas=
        world_size(group), rank=rank(group), ...)``.

    Example:
        >>> s = lux.distributed.sampler(dataset)
        >>> loader = torch.utils.data.DataLoader(dataset, batch_size=32, sampler=s)
    """
    return _sampler(dataset, shuffle, seed, drop_last, group)


def _sampler(
    dataset: Any, shuffle: bool, seed: int, drop_last: bool, group: Group
) -> DistributedSampler[Any]:
    return DistributedSampler(
        dataset,
        num_replicas=world_size(group),
        rank=rank(group),
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
    )


def shard(tree: Tree, *, group: Group = None) -> Tree:
    """This rank's contiguous part of every leaf along dim 0 (a global batch split evenly).

    Rank ``r`` of ``w`` gets rows ``r * b / w`` to ``(r + 1) * b / w`` of a batch of ``b``
    rows. For data that every rank holds in full (e.g. a global batch drawn from the same
    key on every rank).

    Arguments:
        tree: a tree of tensors (e.g. ``(x, y)``) with the same size ``b`` of dim 0.
        group: the process group; ``None``: all ranks.

    Returns:
        The tree of views ``leaf[r * b // w : (r + 1) * b // w]``; ``tree`` itself with
        one rank.

    Raises:
        ValueError: the leaves differ in dim 0, or ``b`` is not divisible by ``w``.

    Example:
        >>> x_local, y_local = lux.distributed.shard((x, y))
    """
    w = world_size(group)
    if w == 1:
        return tree
    leaves, spec = _leaves(tree, "shard")
    sizes = {t.shape[0] if t.dim() else None for t in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "lux_torch.distributed.shard: every leaf must have the same size of dim 0, got "
            f"shapes {[tuple(t.shape) for t in leaves]}"
        )
    (b,) = sizes
    assert b is not None
    if b % w:
        raise ValueError(
            f"lux_torch.distributed.shard: the batch size {b} is not divisible by the "
            f"world size {w}"
        )
    r, size = rank(group), b // w
    return unflatten(spec, [t[r * size : (r + 1) * size] for t in leaves])
