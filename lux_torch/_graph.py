"""Whole-function graphs without Dynamo, the ``jax.jit`` model.

:class:`Traced` wraps a pure function of trees. At the first call with a new input
*signature* it traces the function with ``make_fx`` on fake tensors (no computation runs)
into one graph of aten operations — ``torch.func`` transforms, optree flattening and any
other Python run once, at trace time — and compiles that graph with Inductor
(``torch._inductor.compile``). Later calls with the same signature flatten the arguments
and run the compiled code directly: no Dynamo frame evaluation, no guard tree, which is
most of the cost of a small ``torch.compile`` d step on CPU. A call with the signature
of the previous call is recognised by one C++ check over all its tensors (Dynamo's
``TensorGuards``), without building the signature in Python.

Inductor compiles with its FX graph cache and AOTAutograd's cache (see :func:`_compile`):
a graph compiled before, in this process or another one sharing
``TORCHINDUCTOR_CACHE_DIR``, is loaded instead of generated and compiled again.

The signature is the tree structure, each tensor's shape, strides, dtype, device and
``requires_grad``, the value of every non-tensor leaf, and the values of the Python
scalars that the wrapped function reads from its closure and globals (``guard=``): a
change in any of them traces again. Everything else the function reads from outside its
arguments is a constant of the graph, as under ``jax.jit``. Python control flow that
depends on tensor values cannot be traced (``DataDependentOutputException``).

Where Inductor will lay convolutions out channels-last, the graph is traced once more
from the first one with the convolutions' inputs and weights channels-last
(:func:`_channels_last_convolutions`): in a joint forward/backward graph this saves two
copies of every activation and one of every weight.

Where the fake-tensor trace fails for another reason, the function is traced again on
meta tensors (:func:`_meta_trace`): that is what makes second derivatives under ``vmap``
inside ``grad`` — a PINN loss — traceable on torch 2.x.

Used by :func:`lux_torch.train_step` with ``compile=True``.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import optree
import torch
from torch import Tensor

from .tree import NAMESPACE

__all__ = ["Traced", "assume_constant_result", "is_channels_last", "python_reads", "tracing"]


# Graphs with at most this many input elements, on CPU, get Inductor's C++ wrapper.
_CPP_WRAPPER_MAX = 1 << 16


def _inductor_options(small_cpu: bool) -> dict[str, bool | int]:
    """The signature already checks every input's shape and strides; Inductor need not.
    A small CPU graph's calling code is C++ (``cpp_wrapper``): buffer allocation and kernel
    calls without a Python frame, 13% of the tiny-MLP Adam step (98 -> 86 µs, one thread),
    at the same compile time (the wrapper is built into the kernels' library). Large graphs
    keep the Python wrapper: its cost is negligible there, and the C++ wrapper's calls of
    ATen kernels (convolutions) made the ResNet-18 training step 6-8% slower. A small CPU
    graph's kernels also run on one thread (``cpp.threads``): an OpenMP region costs more
    than it saves on a few thousand elements (tiny step with two threads 139 -> 124 µs).
    (Read at the first compile: importing Inductor costs seconds, so not at import time.)"""
    import torch._inductor.config as config

    options: dict[str, bool | int] = {
        k: False for k in ("size_asserts", "alignment_asserts") if hasattr(config, k)
    }
    if small_cpu and hasattr(config, "cpp_wrapper"):
        options["cpp_wrapper"] = True
    if small_cpu and hasattr(config.cpp, "threads"):
        options["cpp.threads"] = 1
    return options


_F = TypeVar("_F", bound=Callable[..., Any])


def assume_constant_result(fn: _F) -> _F:
    """``torch.compiler.assume_constant_result`` without its import of ``torch._dynamo``
    (seconds, which ``import lux_torch`` must not pay): torch's decorator only sets this
    marker, read by Dynamo when it compiles (``tests/test_import.py`` pins that the two
    agree). Dynamo then runs ``fn`` while tracing instead of tracing it."""
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn


_SCALARS = (int, float, bool, str, complex, type(None))


def tracing() -> bool:
    """True while Dynamo compiles or a dispatch mode (make_fx, fake tensors,
    functionalization) is active: code must then avoid host reads and cached tensors."""
    return torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() > 0


def forward_ad_active() -> bool:
    """True inside forward-mode AD (:func:`torch.func.jvp`, ``jacfwd``,
    ``torch.autograd.forward_ad.dual_level``): operations without a forward-mode rule
    (fused RNN kernels, CPU ``scaled_dot_product_attention``) must then be routed around."""
    return getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0


def python_reads(fn: Any) -> Callable[[], tuple[Any, ...]]:
    """A function returning the Python scalars ``fn`` reads from its closure cells and its
    module globals (by name, in ``fn.__code__.co_names``), for a trace's signature.

    Only a plain Python function is inspected (one level: not the functions it calls);
    anything else gives an empty tuple. Objects (layers, loss objects) are left out: they
    are immutable or identified by the cache key.
    """
    if not isinstance(fn, types.FunctionType):
        return tuple
    cells = [c for c in fn.__closure__ or () if _is_scalar_cell(c)]
    glob, names = fn.__globals__, [n for n in fn.__code__.co_names if n in fn.__globals__]
    names = [n for n in names if isinstance(glob[n], _SCALARS)]
    if not cells and not names:
        return tuple

    def reads() -> tuple[Any, ...]:
        values = [c.cell_contents for c in cells]
        values += [glob.get(n) for n in names]
        return tuple(values)

    return reads


def _is_scalar_cell(cell: Any) -> bool:
    try:
        return isinstance(cell.cell_contents, _SCALARS)
    except ValueError:  # an empty cell
        return False


def _static(value: Any, where: str) -> Hashable:
    try:
        hash(value)
    except TypeError:
        raise TypeError(
            f"{where}: a traced argument holds a {type(value).__name__} leaf; only tensors "
            "and hashable Python values (int, float, str, ...) can be arguments"
        ) from None
    return (type(value), value)


class _Entry:
    """One compiled graph: its signature (for the repeat-call check), where the tensors go
    in, and how outputs are rebuilt."""

    __slots__ = (
        "call",
        "detach",
        "guard",
        "in_static",
        "in_tensor_at",
        "out_spec",
        "out_static",
        "out_tensor_at",
        "spec",
        "tensor_check",
    )

    def __init__(self) -> None:
        self.call: Callable[..., Any] = lambda *a: None
        self.detach = False
        self.spec: Any = None
        self.guard: tuple[Any, ...] = ()
        self.in_tensor_at: list[int] | None = None  # None: all input leaves are tensors
        self.in_static: list[tuple[int, Hashable]] = []
        self.tensor_check: Callable[..., bool] = lambda *a: False
        self.out_spec: Any = None
        self.out_static: list[Any] = []
        self.out_tensor_at: list[int] | None = None  # None: all output leaves are tensors

    def tensors_if_same(self, spec: Any, leaves: list[Any], guard: tuple[Any, ...]) -> Any:
        """The tensor leaves when ``(spec, leaves, guard)`` has exactly this entry's
        signature, else ``None``. One C++ check covers every tensor's shape, strides,
        dtype, device, ``requires_grad`` and dispatch keys (stricter than the signature:
        where it says no, the caller looks the signature up as on a first call)."""
        if spec != self.spec or guard != self.guard:
            return None
        if self.in_tensor_at is None:
            tensors = leaves
        else:
            if any((type(leaves[i]), leaves[i]) != value for i, value in self.in_static):
                return None
            tensors = [leaves[i] for i in self.in_tensor_at]
        return tensors if self.tensor_check(*tensors) else None

    def run(self, tensors: list[torch.Tensor]) -> Any:
        if self.detach:
            tensors = [t.detach() for t in tensors]
        outs = self.call(*tensors)
        if self.out_tensor_at is None:  # every output leaf is a tensor
            return optree.tree_unflatten(self.out_spec, outs)
        leaves = list(self.out_static)
        for i, t in zip(self.out_tensor_at, outs, strict=True):
            leaves[i] = t
        return optree.tree_unflatten(self.out_spec, leaves)


class Traced:
    """``fn`` traced and compiled once per input signature (see the module docstring).

    Arguments:
        fn: a pure function of trees of tensors (and hashable Python values).
        name: how errors and warnings name it.
        guard: returns the Python values ``fn`` reads from outside its arguments (see
            :func:`python_reads`); part of the signature.
        max_entries: graphs kept; a further signature evicts the oldest, with a
            ``RuntimeWarning`` (once) — varying shapes recompile.
        fallback: makes a replacement for ``fn`` (e.g. its ``torch.compile``) used from
            then on when tracing or compiling fails: a ``RuntimeWarning`` names the
            tracing error (type and message) first; if the replacement fails too, its
            error is raised, chained to the tracing error (``__cause__``).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str,
        guard: Callable[[], tuple[Any, ...]] = tuple,
        max_entries: int = 8,
        fallback: Callable[[], Callable[..., Any]] | None = None,
    ) -> None:
        self.fn, self.name, self.guard, self.max_entries = fn, name, guard, max_entries
        self.entries: dict[Hashable, _Entry] = {}
        self._warned = False
        self._make_fallback = fallback
        self.fallback: Callable[..., Any] | None = None
        self._last: _Entry | None = None  # the entry of the previous call

    def __call__(self, *args: Any) -> Any:
        if self.fallback is not None:
            return self.fallback(*args)
        leaves: list[Any]
        leaves, spec = optree.tree_flatten(args, namespace=NAMESPACE)  # type: ignore[arg-type]  # PyTree[T] of a tuple
        guard = self.guard()
        last = self._last
        if last is not None:  # the usual case: the signature of the previous call
            same = last.tensors_if_same(spec, leaves, guard)
            if same is not None:
                return last.run(same)
        tensors = [v for v in leaves if isinstance(v, Tensor)]
        sig: list[Hashable] = [
            (v.shape, v.stride(), v.dtype, v.device, v.requires_grad) for v in tensors
        ]
        if len(tensors) < len(leaves):
            sig += [
                (i, _static(v, self.name))
                for i, v in enumerate(leaves)
                if not isinstance(v, Tensor)
            ]
        key = (spec, tuple(sig), guard)
        entry = self.entries.get(key)
        if entry is None:
            built = self._try_build(spec, leaves, tensors)
            if isinstance(built, Exception):
                return self._fall_back(built, args)
            entry = built
            entry.guard = guard
            self._remember(key, entry)
        self._last = entry
        return entry.run(tensors)

    def _try_build(self, spec: Any, leaves: list[Any], tensors: list[Tensor]) -> _Entry | Exception:
        """The compiled entry, or (with a fallback) the error that stopped it."""
        if self._make_fallback is None:
            return self._build(spec, leaves, tensors)
        try:
            return self._build(spec, leaves, tensors)
        except Exception as error:  # reported before the fallback runs
            return error

    def _fall_back(self, failure: Exception, args: tuple[Any, ...]) -> Any:
        """Warn with the tracing error (its type and first line), then run the fallback;
        if the fallback fails too, its error is raised, chained to the tracing error."""
        assert self._make_fallback is not None
        first = f"{type(failure).__name__}: {failure}".splitlines()[0]
        warnings.warn(
            f"{self.name}: could not trace it into one graph ({first}); using "
            "torch.compile instead",
            RuntimeWarning,
            stacklevel=4,
        )
        fallback = self._make_fallback()
        try:
            result = fallback(*args)
        except Exception as error:
            raise error from failure
        self.fallback = fallback
        return result

    def _remember(self, key: Hashable, entry: _Entry) -> None:
        if len(self.entries) >= self.max_entries:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"{self.name}: traced for more than {self.max_entries} input signatures "
                    "(shapes, dtypes, devices, non-tensor values or Python scalars read by "
                    "the loss function); each new one compiles again and the oldest graph "
                    "is dropped. Keep batch shapes fixed (e.g. drop_last=True).",
                    RuntimeWarning,
                    stacklevel=4,
                )
            dropped = self.entries.pop(next(iter(self.entries)))
            if dropped is self._last:
                self._last = None
        self.entries[key] = entry

    def _build(self, spec: Any, leaves: list[Any], tensors: list[torch.Tensor]) -> _Entry:
        entry = _Entry()
        at = [i for i, v in enumerate(leaves) if isinstance(v, torch.Tensor)]
        static = [None if isinstance(v, torch.Tensor) else v for v in leaves]

        def flat(*ts: torch.Tensor) -> list[torch.Tensor]:
            full = list(static)
            for i, t in zip(at, ts, strict=True):
                full[i] = t
            out = self.fn(*optree.tree_unflatten(spec, full))
            out_leaves, entry.out_spec = optree.tree_flatten(out, namespace=NAMESPACE)
            entry.out_tensor_at = [
                i for i, v in enumerate(out_leaves) if isinstance(v, torch.Tensor)
            ]
            entry.out_static = [None if isinstance(v, torch.Tensor) else v for v in out_leaves]
            tensors = [out_leaves[i] for i in entry.out_tensor_at]
            if len(tensors) == len(out_leaves):
                entry.out_tensor_at = None
            return tensors

        entry.spec = spec
        if len(at) < len(leaves):
            entry.in_tensor_at = at
            entry.in_static = [
                (i, _static(v, self.name))
                for i, v in enumerate(leaves)
                if not isinstance(v, torch.Tensor)
            ]
        entry.tensor_check = _tensor_check(tensors)
        entry.detach = any(t.requires_grad for t in tensors)
        inputs = [t.detach() for t in tensors] if entry.detach else tensors
        graph = _channels_last_convolutions(_trace(flat, inputs), inputs)
        entry.call = _compile(graph, inputs)
        return entry


def _tensor_check(tensors: list[Tensor]) -> Callable[..., bool]:
    """A C++ check that tensors have exactly the shapes, strides, dtypes, devices,
    ``requires_grad`` and dispatch keys of ``tensors`` (Dynamo's tensor guard)."""
    from torch._C._dynamo.guards import TensorGuards

    sizes: list[Any] = [list(t.shape) for t in tensors]  # per tensor (the stub says per dim)
    strides: list[Any] = [list(t.stride()) for t in tensors]
    checker = TensorGuards(*tensors, dynamic_dims_sizes=sizes, dynamic_dims_strides=strides)
    return checker.check


def _compile(graph: torch.fx.GraphModule, inputs: list[Tensor]) -> Callable[..., Any]:
    """Inductor's compiled ``graph``, for inputs shaped like ``inputs``.

    Inductor sees fake copies of the inputs with static shapes from a fake-tensor mode
    that has a shape environment: without one, Inductor's FX graph cache and
    AOTAutograd's cache are bypassed ("No shape env") and every process compiles the
    graph again; with one, a graph compiled before (by any process using the same
    ``TORCHINDUCTOR_CACHE_DIR``) is loaded from disk. The generated code is the same.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True)
    fakes: list[Any] = [mode.from_tensor(t, static_shapes=True) for t in inputs]
    compiled: Callable[..., Any] = torch._inductor.compile(
        graph, fakes, options=_inductor_options(_small_cpu_graph(graph, inputs))
    )
    return compiled


def _small_cpu_graph(graph: torch.fx.GraphModule, inputs: list[Tensor]) -> bool:
    """Whether ``graph`` takes at most ``_CPP_WRAPPER_MAX`` input elements, all on CPU, and
    was traced on fake tensors: a graph traced on meta tensors (:func:`_meta_trace`) keeps
    meta values in its nodes' metadata, which Inductor's C++ wrapper refuses ("Device
    mismatch between fake input and example input")."""
    if sum(t.numel() for t in inputs) > _CPP_WRAPPER_MAX:
        return False
    return all(t.device.type == "cpu" for t in inputs) and not _meta_traced(graph)


# The channels-last memory format of a tensor by its number of dimensions: the input or
# weight of a 2-D or 3-D convolution.
_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def is_channels_last(t: Tensor) -> bool:
    """Whether ``t`` is dense in the channels-last format of its rank (4-D or 5-D)."""
    layout = _CHANNELS_LAST.get(t.dim())
    return layout is not None and t.is_contiguous(memory_format=layout)


def _channels_last_convolutions(
    graph: torch.fx.GraphModule, inputs: list[Tensor]
) -> torch.fx.GraphModule:
    """``graph`` traced again with every 2-D and 3-D convolution's input and weight
    channels-last (``channels_last`` / ``channels_last_3d``), where Inductor would lay the
    convolutions out channels-last anyway (its layout optimization; always on CPU with
    oneDNN); ``graph`` itself where it would not, or where the new trace fails (an op that
    needs another layout, e.g. a ``view`` of a convolution's output).

    Why: in a graph that holds forward *and* backward (what ``torch.func.grad`` traces),
    Inductor fixes the input of every ``convolution_backward`` to the strides the trace
    recorded -- contiguous, as eager computed them -- so each activation feeding a
    convolution was written three times (channels-last for the convolution, channels-last
    again for its backward, contiguous for the rest); ``torch.compile`` never meets this,
    its forward and backward being separate graphs. Traced channels-last from the start,
    the strides agree and each activation is written once; each weight is made channels-last
    once for the convolution and its backward (Inductor made one copy for each): ResNet-18's
    gradients 1.14-1.27x -> 1.02-1.06x of ``torch.compile``; a small 3-D convolutional
    net's 10% faster than from the first trace. Values are unchanged:
    Inductor computes channels-last either way. The outputs keep the strides of the first
    trace (the signature of the next step depends on them).
    """
    conv = torch.ops.aten.convolution.default
    if _meta_traced(graph) or not any(
        n.target is conv and getattr(_val(n.args[0]), "ndim", 0) in _CHANNELS_LAST
        for n in graph.graph.nodes
    ):
        return graph
    from torch._inductor.graph import GraphLowering
    from torch.fx.experimental.proxy_tensor import make_fx

    try:  # Inductor's own decision (an internal API: if it changes, keep the first trace)
        layout_opt = GraphLowering.decide_layout_opt(graph, is_inference=True)
    except Exception:
        return graph
    if not layout_opt:
        return graph
    (outs,) = [n.args[0] for n in graph.graph.nodes if n.op == "output"]
    want = [_val(o).stride() if isinstance(o, torch.fx.Node) else None for o in outs]

    backward = torch.ops.aten.convolution_backward.default
    converted: dict[int, tuple[Tensor, Tensor]] = {}

    def channels_last(t: Tensor) -> Tensor:
        """One channels-last version of ``t`` for every use (the convolution and its
        backward share one copy of a weight, instead of one copy each)."""
        if id(t) not in converted:  # ``t`` is kept alive with it: ids are not reused
            converted[id(t)] = (t, t.contiguous(memory_format=_CHANNELS_LAST[t.dim()]))
        return converted[id(t)][1]

    class ChannelsLast(torch.fx.Interpreter):
        def call_function(self, target: Any, args: Any, kwargs: Any) -> Any:
            if target is conv and args[0].dim() in _CHANNELS_LAST:  # (input, weight, ...)
                args = (channels_last(args[0]), channels_last(args[1]), *args[2:])
            elif target is backward and args[1].dim() in _CHANNELS_LAST:  # (grad, input, weight)
                args = (args[0], channels_last(args[1]), channels_last(args[2]), *args[3:])
            return super().call_function(target, args, kwargs)

        def output(self, target: Any, args: Any, kwargs: Any) -> Any:
            return [_restrided(o, w) for o, w in zip(args[0], want, strict=True)]

    retrace = make_fx(ChannelsLast(graph).run, tracing_mode="fake", _allow_non_fake_inputs=True)
    try:
        return retrace(*inputs)
    except Exception:  # an op that needs the traced layout: keep the first trace
        return graph


def _val(node: Any) -> Any:
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else None


def _restrided(t: Any, stride: tuple[int, ...] | None) -> Any:
    """``t`` with the strides ``stride`` of the first trace: the same tensor where they
    differ only on size-1 dimensions, a contiguous copy where they are contiguous; any
    other layout raises (and the first trace is kept)."""
    if not isinstance(t, Tensor) or stride is None or t.stride() == stride:
        return t
    target = torch.empty_strided(t.shape, stride, device="meta")
    if not target.is_contiguous():
        raise RuntimeError(f"output strides {t.stride()} cannot be restored to {stride}")
    return t.contiguous().as_strided(t.shape, stride)


def _meta_traced(graph: torch.fx.GraphModule) -> bool:
    """Whether ``graph`` was traced on meta tensors (:func:`_meta_trace`)."""
    vals = [_val(n) for n in graph.graph.nodes if n.op == "placeholder"]
    return any(isinstance(v, Tensor) and v.device.type == "meta" for v in vals)


def _trace(flat: Callable[..., Any], inputs: list[Tensor]) -> torch.fx.GraphModule:
    """``make_fx`` on fake tensors; where that fails for a reason other than data-dependent
    control flow, again on meta tensors (see :func:`_meta_trace`). The first error is
    raised if both fail, with the second as a note."""
    from torch.fx.experimental.proxy_tensor import make_fx

    try:
        return make_fx(flat, tracing_mode="fake", _allow_non_fake_inputs=True)(*inputs)
    except Exception as error:
        if _data_dependent(error):
            raise
        try:
            return _meta_trace(flat, inputs)
        except Exception as second:
            error.add_note(
                f"(tracing on meta tensors failed too: {type(second).__name__}: "
                f"{str(second).splitlines()[0] if str(second) else ''})"
            )
            raise error from None


def _data_dependent(error: Exception) -> bool:
    from torch._subclasses.fake_tensor import DataDependentOutputException
    from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

    return isinstance(error, DataDependentOutputException | GuardOnDataDependentSymNode)


def _meta_trace(flat: Callable[..., Any], inputs: list[Tensor]) -> torch.fx.GraphModule:
    """Trace ``flat`` with ``make_fx`` on meta copies of ``inputs`` (one device), then put
    the graph's ``meta`` devices back on that device.

    Fake tensors wrap meta tensors; under ``grad`` of ``vmap`` of second derivatives
    (``vmap(hessian(f))``, ``vmap(jacfwd(jacrev(f)))``: a PINN's loss) torch 2.x's
    functorch reaches the meta tensor inside and fails with "found at least two devices,
    meta and cpu". Tracing on meta tensors throughout computes nothing either, and a read
    of values (``.item()``, ``.numpy()``, a branch on a tensor) raises as under fake
    tensors, so no value can be baked into the graph.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    devices = {t.device for t in inputs}
    if len(devices) != 1:
        raise RuntimeError(f"inputs on several devices {sorted(map(str, devices))}")
    (device,) = devices
    meta = [torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta") for t in inputs]
    graph = make_fx(flat, tracing_mode="real")(*meta)

    def fix(value: Any) -> Any:
        if isinstance(value, torch.device) and value.type == "meta":
            return device
        return value

    for node in graph.graph.nodes:
        node.args = torch.fx.node.map_aggregate(node.args, fix)
        node.kwargs = torch.fx.node.map_aggregate(node.kwargs, fix)
        if node.op == "get_attr":
            value = getattr(graph, node.target)
            if isinstance(value, Tensor) and value.is_meta:
                raise RuntimeError(f"the trace holds a meta tensor constant {node.target}")
    graph.recompile()
    return graph
