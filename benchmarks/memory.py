"""Peak memory of one training step: lux vs torch.nn + torch.optim.Adam, same model.

Run:  python benchmarks/memory.py [--threads 2]

Models (those of ``train_step.py``, ``cnn.py`` and ``sequence.py``, identical weights):
tiny MLP 2-32-32-1 tanh (batch 64, MSE), medium MLP 784-512-512-10 relu (batch 128,
cross-entropy), LeNet (batch 64 of 1x28x28, cross-entropy), LSTM 2x128 (batch 32,
sequence 50, input 64, MSE on the outputs). Candidates, each after three warm-up steps
(so torch.optim's state exists):

* torch: forward, ``backward()``, ``Adam.step()`` (torch's default implementation for
  the device), ``zero_grad(set_to_none=True)``. Zeroing last, torch holds no gradients
  between steps, like lux; zeroing first (the usual recipe) moves the old gradients'
  bytes from the step into "before" and gives the same total peak;
* lux pure: ``ts, loss, _ = lux.train_step(loss_fn, (x, y), ts)`` with
  ``lux.optim.adam`` (eager; the old train state stays valid, so the new parameters and
  moments are new tensors);
* lux donate: the same with ``donate=True`` (the update overwrites the old train state's
  buffers, like JAX's ``donate_argnums``).

Columns, in bytes of tensor memory:

* before: the tensors the training loop holds between steps (parameters, optimizer
  state, model state, the batch), counted by walking them;
* step peak: the highest tensor memory reached during the step above "before". On CPU
  it is the running sum of the profiler's allocation events in time order
  (``torch.profiler.profile(profile_memory=True)``: sizes, negative for frees); every
  run first verifies the method on toy functions whose peak is known by construction.
  On CUDA (a second table when a GPU is present) it is ``torch.cuda.max_memory_allocated()``
  after ``reset_peak_memory_stats()``, minus the memory allocated before the step;
* total peak: before + step peak — what the step needs in all, and what decides whether
  a model fits; the ratios lux / torch are of total peaks (targets, performance issue:
  <= 1.10 for the pure step, <= 1.0 with ``donate=True``), the step-peak ratio is
  shown next to them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from _harness import parse_args, print_table
from cnn import _copy_weights, _lenet
from train_step import CASES, _data, _torch_model

import lux_torch as lux

Step = Callable[[], None]

# ----------------------------------------------------------------------- measurement


def _cpu_step_peak(fn: Callable[[], object]) -> int:
    """Peak tensor memory (bytes) above its level at the start while ``fn`` runs on CPU:
    the running sum of the profiler's allocation events in time order.

    ``fn`` runs twice under the profiler and the second call is measured: the profiler
    drops the frees of memory allocated before it started (what the previous step left,
    e.g. torch's old ``.grad`` tensors), so the first call allocates what the second
    frees."""
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
        with record_function(_MEASURED):
            fn()
    assert prof.profiler is not None
    events = prof.profiler.kineto_results.events()
    (span,) = [e for e in events if e.name() == _MEASURED]
    memory = [
        e
        for e in events
        if e.name() == "[memory]"
        and e.device_type() == torch.autograd.DeviceType.CPU
        and span.start_ns() <= e.start_ns() <= span.end_ns()
    ]
    total = peak = 0
    for e in sorted(memory, key=lambda e: e.start_ns()):
        total += e.nbytes()
        peak = max(peak, total)
    return peak


_MEASURED = "benchmarks.memory: measured step"


def _cuda_step_peak(fn: Callable[[], object]) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def _check_cpu_method() -> None:
    """The profiler method on functions whose peak is known by construction."""

    def toy() -> torch.Tensor:
        a = torch.empty(1000)  # 4,000 bytes
        b = torch.empty(2000)  # 12,000 live: the peak
        del a, b
        return torch.empty(500)  # 2,000 live at the end

    def chain() -> torch.Tensor:
        x = torch.ones(10_000)
        return (x * 2 + 1).sum()  # x, x*2, then x*2+1: 120,000 bytes live at once

    assert _cpu_step_peak(toy) == 12_000, _cpu_step_peak(toy)
    got = _cpu_step_peak(chain)
    assert 120_000 <= got <= 120_000 + 64, got  # + the 0-dim result
    x, y = torch.ones(10_000), torch.full((10_000,), 2.0)
    assert _cpu_step_peak(lambda: x.mul_(y)) == 0  # in place: nothing new
    box = [torch.empty(1000)]

    def replace() -> None:  # frees what the previous call left, then allocates as much
        box.clear()
        box.append(torch.empty(1000))

    assert _cpu_step_peak(replace) == 0, _cpu_step_peak(replace)


def _bytes(*trees: Any) -> int:
    """Bytes of the distinct storages of the tensors in ``trees`` (dicts, lists,
    tuples, train states and torch.optim state dicts)."""
    seen: dict[tuple[str, int], int] = {}
    stack = list(trees)
    while stack:
        obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            seen[(str(obj.device), storage.data_ptr())] = storage.nbytes()
        elif isinstance(obj, dict):
            stack += obj.values()
        elif isinstance(obj, (list, tuple)):
            stack += obj
        elif isinstance(obj, lux.TrainState):
            stack += [obj.params, obj.states, lux.tree.leaves(obj.opt_state)]
    return sum(seen.values())


# ----------------------------------------------------------------------------- cases


class Case:
    """One model: its torch step, its lux steps and what each holds between steps."""

    def __init__(
        self,
        ours: lux.Layer,
        ps: Any,
        st: Any,
        theirs: torch.nn.Module,
        loss_fn: Any,
        torch_loss: Callable[[Any, Any], torch.Tensor],
        data: tuple[Any, Any],
    ) -> None:
        self.ours, self.ps, self.st, self.theirs = ours, ps, st, theirs
        self.loss_fn, self.torch_loss, self.data = loss_fn, torch_loss, data

    def torch(self, device: torch.device) -> tuple[Step, Callable[[], int]]:
        model = self.theirs.to(device)
        x, y = (t.to(device) for t in self.data)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step() -> None:
            self.torch_loss(model(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)  # no .grad held between steps, as in lux

        def before() -> int:
            held = [list(model.parameters()), list(model.buffers()), x, y]
            return _bytes(*held, list(opt.state.values()))

        return step, before

    def lux(self, device: torch.device, donate: bool) -> tuple[Step, Callable[[], int]]:
        ps, st = lux.tree.to(self.ps, device), lux.tree.to(self.st, device)
        x, y = (t.to(device) for t in self.data)
        box = [lux.TrainState(self.ours, ps, st, lux.optim.adam(1e-3))]

        def step() -> None:
            box[0], _, _ = lux.train_step(self.loss_fn, (x, y), box[0], donate=donate)

        return step, lambda: _bytes(box[0], x, y)


def _mlp(sizes: tuple[int, ...], act: str, batch: int) -> Case:
    theirs = _torch_model(sizes, act)
    activation = torch.tanh if act == "tanh" else torch.relu
    n = len(sizes) - 1
    ours = lux.Chain(
        *(
            lux.Linear(a, b, activation=activation if i < n - 1 else None)
            for i, (a, b) in enumerate(itertools.pairwise(sizes))
        )
    )
    ps, st = lux.setup(0, ours)
    ps = _copy_weights(ps, theirs)
    mse = sizes[-1] == 1
    loss_fn = lux.losses.MSELoss() if mse else lux.losses.CrossEntropyLoss()
    torch_loss = F.mse_loss if mse else F.cross_entropy
    return Case(ours, ps, st, theirs, loss_fn, torch_loss, _data(sizes, batch))


def _lenet_case() -> Case:
    ours, theirs = _lenet()
    ps, st = lux.setup(0, ours)
    ps = _copy_weights(ps, theirs)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)
    return Case(ours, ps, st, theirs, lux.losses.CrossEntropyLoss(), F.cross_entropy, (x, y))


class _LSTMOutputs(torch.nn.Module):
    """``nn.LSTM`` returning only its outputs (as a loss takes them)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(64, 128, num_layers=2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.lstm(x)[0]
        return out


def _lstm_loss(model: lux.Layer, ps: Any, st: Any, data: Any) -> Any:
    x, y = data
    (out, _), st = model(x, ps, st)
    return F.mse_loss(out, y), st, {}


def _lstm_case() -> Case:
    theirs = _LSTMOutputs()
    ours = lux.LSTM(64, 128, num_layers=2, batch_first=True)
    ps, st = lux.load_state_dict(ours, theirs.lstm.state_dict())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 50, 64, generator=gen)
    y = torch.randn(32, 50, 128, generator=gen)
    return Case(ours, ps, st, theirs, _lstm_loss, F.mse_loss, (x, y))


def cases() -> dict[str, Case]:
    (tiny_label, tiny), (medium_label, medium) = CASES.items()
    return {
        tiny_label: _mlp(*tiny),
        medium_label: _mlp(*medium),
        "LeNet, b64 1x28x28, CE": _lenet_case(),
        "LSTM 2x128, b32 L50 in64, MSE": _lstm_case(),
    }


# ------------------------------------------------------------------------------ main


def measure(case: Case, device: torch.device) -> dict[str, tuple[int, int]]:
    """``{candidate: (before, step peak)}`` in bytes (median of three steps)."""
    peak_of = _cuda_step_peak if device.type == "cuda" else _cpu_step_peak
    candidates = {
        "torch": case.torch(device),
        "lux pure": case.lux(device, donate=False),
        "lux donate": case.lux(device, donate=True),
    }
    out = {}
    for name, (step, before) in candidates.items():
        for _ in range(3):
            step()
        held = before()
        peaks = sorted(peak_of(step) for _ in range(3))
        out[name] = (held, peaks[1])
    return out


def _kib(n: int) -> str:
    return f"{n / 1024:,.0f}"


def main() -> None:
    parse_args(__doc__)
    _check_cpu_method()
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    for device in devices:
        rows = []
        for label, case in cases().items():
            m = measure(case, device)
            torch_total = sum(m["torch"])
            row = [label, f"{_kib(m['torch'][0])} + {_kib(m['torch'][1])}"]
            for name in ("lux pure", "lux donate"):
                held, peak = m[name]
                total_ratio = (held + peak) / torch_total
                step_ratio = peak / m["torch"][1]
                row.append(
                    f"{_kib(held)} + {_kib(peak)}: {total_ratio:.2f}x (step {step_ratio:.2f}x)"
                )
            rows.append(tuple(row))
        print_table(
            f"Peak memory of one Adam step on {device.type}, KiB: before + step peak; "
            "ratio lux / torch of total peaks (step peaks in parentheses)",
            rows,
            ["model", "torch.nn + Adam", "lux pure", "lux donate=True"],
        )


if __name__ == "__main__":
    main()
