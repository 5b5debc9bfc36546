"""Checkpoints: exact round trips, refusing code in files, atomic saves, clear errors."""

from __future__ import annotations

import collections
import errno
import io
import json
import os
import pathlib
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from typing import IO, Any, NamedTuple

import pytest
import torch
from helpers import bn_mlp

import lux_torch as lux
from lux_torch.checkpoint import CheckpointError
from lux_torch.interop import checkpoint  # the module lux_torch.checkpoint aliases
from lux_torch.tree import Static


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def assert_identical(a: Any, b: Any, path: str = "") -> None:
    """``a`` and ``b`` are the same tree: container types, key order, dtypes, shapes, bits."""
    assert type(a) is type(b), (path, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape, a.device) == (b.dtype, b.shape, b.device), path
        assert torch.equal(_bits(a), _bits(b)), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path  # same keys in the same order
        for k in a:
            assert_identical(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{path}.{i}")
    elif isinstance(a, float):
        assert a.hex() == b.hex(), path  # nan and -0.0 too
    elif isinstance(a, complex):
        assert (a.real.hex(), a.imag.hex()) == (b.real.hex(), b.imag.hex()), path
    else:
        assert a == b, path


def _rich_tree() -> dict[Any, Any]:
    model = bn_mlp(0.2)
    ps, st = lux.setup(lux.random.key(0), model)
    x = lux.random.normal(lux.random.key(1), (5, 3))
    _, st = model(x, ps, st)  # running statistics and key advanced
    opt_state = lux.optim.adam(1e-3).init(ps)
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g, dtype=torch.float64)
    bit_patterns = [0x7FC00001, 0xFF800000, 0x80000000]  # a NaN with a payload, -inf, -0.0
    nan_payload = torch.tensor([b - (b >> 31 << 32) for b in bit_patterns], dtype=torch.int32)
    tensors = {
        "f16": torch.randn(3, generator=g).half(),
        "bf16": torch.randn(3, generator=g).bfloat16(),
        "f64_nonfinite": torch.tensor([float("nan"), float("inf"), -0.0], dtype=torch.float64),
        "f32_nan_payload": nan_payload.view(torch.float32),
        "c64": torch.randn(2, generator=g, dtype=torch.complex64),
        "c128": torch.randn(2, generator=g, dtype=torch.complex128),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "transposed": base.t(),  # non-contiguous
        "slice": base[1:3, ::2],  # a view of a larger storage
    }
    return {
        "ps": ps,
        "st": st,
        "opt_state": opt_state,  # tuples and dicts of tensors
        "step": 1200,
        "big_int": 2**70,
        "lr": 0.1,
        "special_floats": [float("nan"), float("-inf"), -0.0, 1e-310],
        "z": 1 - 2.5j,
        "name": "run-ünïcode-\u2603",
        "flags": (True, False, None),
        "zebra_first": {"z": 1, "a": 2, "m": 3},  # insertion order, not sorted
        7: "int key",
        "ordered": collections.OrderedDict([("b", torch.ones(1)), ("a", 2)]),
        "static": {"training": Static(False), "tuple": Static(("a", 1, 2.5, None))},
        "nested": [[], (), {}, [(1,), {"x": [None]}]],
        "tensors": tensors,
    }


def test_round_trip_is_exact(tmp_path: pathlib.Path) -> None:
    tree = _rich_tree()
    path = tmp_path / "ckpt.pt"
    assert lux.save(path, tree) is None  # type: ignore[func-returns-value]  # checked
    back = lux.load(path)
    assert_identical(tree, back)
    assert lux.tree.structure(back) == lux.tree.structure(tree)
    assert back["st"]["layer_2"]["training"] == Static(True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no temporary left


def test_round_trip_with_str_path_and_map_location(tmp_path: pathlib.Path) -> None:
    tree = {"w": torch.arange(6.0).reshape(2, 3), "k": lux.random.key(3)}
    name = str(tmp_path / "a.ckpt")
    lux.save(name, tree)
    for where in ("cpu", torch.device("cpu"), None):
        assert_identical(lux.load(name, map_location=where), tree)


def test_loaded_checkpoint_continues_the_model(tmp_path: pathlib.Path) -> None:
    model = bn_mlp(0.2)
    ps, st = lux.setup(lux.random.key(0), model)
    x = lux.random.normal(lux.random.key(1), (5, 3))
    lux.save(tmp_path / "c.pt", {"ps": ps, "st": st})
    ckpt = lux.load(tmp_path / "c.pt")
    y, st2 = model(x, ps, st)
    y_loaded, st2_loaded = model(x, ckpt["ps"], ckpt["st"])  # same key: same dropout mask
    assert torch.equal(y, y_loaded)
    assert_identical(st2, st2_loaded)


def test_tied_tensors_stay_tied_and_views_are_saved_compactly(tmp_path: pathlib.Path) -> None:
    w = torch.ones(3, 3)
    big = torch.zeros(1_000_000)
    lux.save(tmp_path / "t.pt", {"a": w, "b": [w], "view": big[:10]})
    back = lux.load(tmp_path / "t.pt")
    assert back["a"] is back["b"][0]
    assert torch.equal(back["view"], torch.zeros(10))
    assert (tmp_path / "t.pt").stat().st_size < 100_000  # not the 4 MB storage


def test_parameters_and_grad_tensors_load_as_plain_detached_tensors(
    tmp_path: pathlib.Path,
) -> None:
    p = torch.nn.Parameter(torch.arange(3.0))
    r = (torch.arange(3.0, dtype=torch.float64).requires_grad_() * 2).conj()
    lux.save(tmp_path / "p.pt", {"p": p, "r": r})
    back = lux.load(tmp_path / "p.pt")
    assert type(back["p"]) is torch.Tensor and not back["p"].requires_grad
    assert torch.equal(back["p"], torch.arange(3.0))
    assert torch.equal(back["r"], torch.arange(3.0, dtype=torch.float64) * 2)


def test_overwrite_keeps_permissions_and_leaves_one_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "c.pt"
    lux.save(path, {"v": 1})
    if os.name == "posix":
        path.chmod(0o640)
    lux.save(path, {"v": 2})
    assert lux.load(path) == {"v": 2}
    if os.name == "posix":
        assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


# ------------------------------------------------------------------ unsupported values


class _Point(NamedTuple):
    x: torch.Tensor


class _Sub(torch.Tensor):
    pass


def _unsupported_cases() -> list[tuple[Any, str, str]]:
    import numpy as np

    ps = {"w": torch.ones(2)}
    ts = lux.TrainState(lux.Linear(2, 1), *lux.setup(0, lux.Linear(2, 1)), lux.optim.sgd(0.1))
    return [
        ({"opt": ((), {"mu": np.ones(2)})}, "'opt.1.mu'", "numpy.ndarray"),
        ({"fn": [len]}, "'fn.0'", "builtin_function_or_method"),
        ({"ts": ts}, "'ts'", "TrainState"),
        ({"nt": _Point(torch.ones(1))}, "'nt'", "_Point"),
        ({"sub": torch.ones(2).as_subclass(_Sub)}, "'sub'", "_Sub"),
        ({"sparse": torch.eye(2).to_sparse()}, "'sparse'", "sparse"),
        ({"ps": ps, "bad": {(1, 2): torch.ones(1)}}, "'bad'", "tuple"),
        ({"st": {"training": Static(frozenset({1}))}}, "'st.training'", "frozenset"),
        ({"x": np.float64(1.0)}, "'x'", "numpy.float64"),
        (lux.Linear(2, 1), "root", "Linear"),
    ]


@pytest.mark.parametrize("case", range(10))
def test_unsupported_values_name_path_and_type_and_write_nothing(
    case: int, tmp_path: pathlib.Path
) -> None:
    tree, where, what = _unsupported_cases()[case]
    path = tmp_path / "c.pt"
    lux.save(path, {"good": torch.arange(4)})
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"lux_torch\.save") as info:
        lux.save(path, tree)
    assert where in str(info.value) and what in str(info.value), str(info.value)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_reference_cycle_is_refused(tmp_path: pathlib.Path) -> None:
    loop: list[Any] = [torch.ones(1)]
    loop.append({"back": loop})
    with pytest.raises(ValueError, match=r"cycle.*'loop\.1\.back'"):
        lux.save(tmp_path / "c.pt", {"loop": loop})
    shared = [1]
    lux.save(tmp_path / "c.pt", {"a": shared, "b": shared})  # shared, not cyclic: fine
    assert lux.load(tmp_path / "c.pt") == {"a": [1], "b": [1]}


# ------------------------------------------------------------------- failed saves


def _failing_write(exc: BaseException) -> Any:
    def write(payload: dict[str, Any], f: IO[bytes]) -> None:
        f.write(b"PK\x03\x04 half a checkpoint")
        raise exc

    return write


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failed_write_keeps_previous_file_and_leaves_no_temporary(
    exc: BaseException, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.pt"
    lux.save(path, {"step": 1, "w": torch.arange(5.0)})
    before = path.read_bytes()
    monkeypatch.setattr(checkpoint, "_write", _failing_write(exc))
    with pytest.raises(type(exc)):
        lux.save(path, {"step": 2, "w": torch.zeros(5)})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    monkeypatch.undo()
    assert lux.load(path)["step"] == 1


def test_failed_first_save_leaves_nothing(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "_write", _failing_write(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        lux.save(tmp_path / "new.pt", {"w": torch.ones(1)})
    assert list(tmp_path.iterdir()) == []


def test_failed_rename_removes_the_temporary(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "is_a_dir"
    target.mkdir()
    (target / "inside").write_text("keep")
    with pytest.raises(OSError):
        lux.save(target, {"w": torch.ones(1)})  # os.replace cannot replace a directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["is_a_dir"]
    assert (target / "inside").read_text() == "keep"


def test_missing_directory_raises(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError):
        lux.save(tmp_path / "nope" / "c.pt", {"w": torch.ones(1)})


# --------------------------------------------------------------- loading is safe


class _Exploit:
    """Unpickling this creates the directory ``marker`` (a stand-in for any command)."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (self.marker,))


def _crafted_files(tmp_path: pathlib.Path, marker: pathlib.Path) -> list[pathlib.Path]:
    evil = _Exploit(marker)
    looks_right = tmp_path / "looks_like_a_checkpoint.pt"
    structure = json.dumps({"t": "tensor", "i": 0})
    torch.save(
        {"format": checkpoint.FORMAT, "version": 1, "structure": structure, "tensors": [evil]},
        looks_right,
    )
    hidden = tmp_path / "hidden_in_a_tensor_dict.pt"
    torch.save({"w": torch.ones(2), "extra": evil}, hidden)
    legacy = tmp_path / "legacy_format.pt"
    torch.save(evil, legacy, _use_new_zipfile_serialization=False)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(evil))
    return [looks_right, hidden, legacy, plain]


def test_crafted_pickles_are_refused_and_run_nothing(tmp_path: pathlib.Path) -> None:
    # the payload is live: unpickling it unsafely does run it
    probe = tmp_path / "probe_marker"
    pickle.loads(pickle.dumps(_Exploit(probe)))
    assert probe.is_dir()

    marker = tmp_path / "marker"
    for path in _crafted_files(tmp_path, marker):
        with pytest.raises(CheckpointError) as info:
            lux.load(path)
        assert str(path) in str(info.value)
        assert not marker.exists(), f"loading {path.name} ran code from the file"
    with pytest.raises(CheckpointError, match=r"refused to load.*execute code"):
        lux.load(tmp_path / "looks_like_a_checkpoint.pt")


# ----------------------------------------------------------- corrupt and foreign files


def _good_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save(
        {
            "format": checkpoint.FORMAT,
            "version": 1,
            "structure": json.dumps({"t": "tensor", "i": 0}),
            "tensors": [torch.arange(1000.0)],
        },
        buffer,
    )
    return buffer.getvalue()


def _flip_tensor_byte(data: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("/data/0"))
    start = info.header_offset
    name_len = int.from_bytes(data[start + 26 : start + 28], "little")
    extra_len = int.from_bytes(data[start + 28 : start + 30], "little")
    at = start + 30 + name_len + extra_len + 123
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def _write_torch(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _with_payload(**changes: Any) -> bytes:
    payload = {
        "format": checkpoint.FORMAT,
        "version": 1,
        "structure": json.dumps({"t": "tensor", "i": 0}),
        "tensors": [torch.ones(2)],
    }
    payload.update(changes)
    return _write_torch(payload)


BAD_FILES: dict[str, tuple[Any, str]] = {
    "truncated_half": (lambda good: good[: len(good) // 2], "truncated or corrupt"),
    "truncated_tail": (lambda good: good[:-10], "truncated or corrupt"),
    "bit_flip_in_data": (_flip_tensor_byte, "CRC-32"),
    "random_bytes": (lambda good: bytes(range(256)) * 8, "not a zip archive"),
    "empty": (lambda good: b"", "not a zip archive"),
    "json": (lambda good: json.dumps({"format": checkpoint.FORMAT}).encode(), "not a zip"),
    "plain_tensor": (lambda good: _write_torch(torch.ones(3)), "holds a torch.Tensor"),
    "state_dict": (lambda good: _write_torch({"w": torch.ones(1)}), "not a lux_torch"),
    "newer_version": (lambda good: _with_payload(version=99), "format version 99"),
    "bad_json": (lambda good: _with_payload(structure="{nope"), "not valid JSON"),
    "index_out_of_range": (
        lambda good: _with_payload(structure=json.dumps({"t": "tensor", "i": 5})),
        "out of range",
    ),
    "unknown_node": (
        lambda good: _with_payload(structure=json.dumps({"t": "pickle", "v": "x"})),
        "unknown node type 'pickle'",
    ),
    "malformed_node": (
        lambda good: _with_payload(structure=json.dumps({"t": "float", "v": 3})),
        "malformed 'float' node",
    ),
    "wrong_scalar": (
        lambda good: _with_payload(structure=json.dumps({"t": "int", "v": "3"})),
        "a int node holds '3'",
    ),
    "tensors_not_tensors": (lambda good: _with_payload(tensors=[1, 2]), "not a list of tensors"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_corrupt_truncated_or_foreign_files_raise_a_clear_error(
    kind: str, tmp_path: pathlib.Path
) -> None:
    make, problem = BAD_FILES[kind]
    path = tmp_path / f"{kind}.ckpt"
    path.write_bytes(make(_good_bytes()))
    with pytest.raises(CheckpointError) as info:
        lux.load(path)
    message = str(info.value)
    assert str(path) in message and problem in message, message
    assert isinstance(info.value, ValueError)


def test_the_good_bytes_used_above_do_load(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "good.ckpt"
    path.write_bytes(_good_bytes())
    assert torch.equal(lux.load(path), torch.arange(1000.0))


def test_missing_file_raises_file_not_found_naming_it(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "absent.pt"
    with pytest.raises(FileNotFoundError, match=r"absent\.pt"):
        lux.load(path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_round_trip_and_map_to_cpu(tmp_path: pathlib.Path) -> None:
    tree = {"w": torch.arange(4.0, device="cuda"), "k": lux.random.key(0).cuda()}
    lux.save(tmp_path / "g.pt", tree)
    assert_identical(lux.load(tmp_path / "g.pt"), tree)
    on_cpu = lux.load(tmp_path / "g.pt", map_location="cpu")
    assert on_cpu["w"].device.type == "cpu"
    assert torch.equal(on_cpu["w"], torch.arange(4.0))


# ------------------------------------------------- write errors and interrupts stay what they are


class _FailingFile(io.RawIOBase):
    """A file that accepts ``limit`` bytes, then raises ``error`` on every write."""

    def __init__(self, limit: int, error: BaseException) -> None:
        self.limit, self.error, self.written = limit, error, 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.written + len(data) > self.limit:
            raise self.error
        self.written += len(data)
        return len(data)


def _some_payload() -> dict[str, Any]:
    return {
        "format": checkpoint.FORMAT,
        "version": 1,
        "structure": json.dumps({"t": "list", "items": [{"t": "tensor", "i": 0}]}),
        "tensors": [torch.arange(1000.0), torch.ones(3)],
    }


@pytest.mark.parametrize("kind", ["disk_full", "interrupt"])
def test_a_failing_or_interrupted_write_raises_the_real_error(kind: str) -> None:
    # torch's zip writer turns the error raised by the file into a RuntimeError (it finishes
    # the archive while the error unwinds); lux_torch.save documents OSError and must let
    # Ctrl-C stay a KeyboardInterrupt, wherever in the file it happens
    payload = _some_payload()
    full = io.BytesIO()
    checkpoint._write(payload, full)
    size = len(full.getvalue())
    for limit in range(0, size, 97):
        error = OSError(errno.ENOSPC, "No space left on device") if kind == "disk_full" else None
        raised = error or KeyboardInterrupt()
        with pytest.raises(type(raised)) as info:
            checkpoint._write(payload, _FailingFile(limit, raised))  # type: ignore[arg-type]  # duck file
        assert info.value is raised, (limit, info.value)


_FULL_DISK_SCRIPT = """
import os, resource, signal, sys, torch, lux_torch as lux
path = sys.argv[1]
lux.save(path, {"step": 1, "w": torch.arange(5.0)})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
try:
    lux.save(path, {"step": 2, "w": torch.zeros(100_000)})
except OSError as err:
    print("OSError", err.errno)
except BaseException as err:
    print("other", type(err).__name__, err)
"""


@pytest.mark.slow
def test_a_full_disk_raises_oserror_and_keeps_the_previous_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "c.pt"
    repo = pathlib.Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["OSError", str(errno.EFBIG)], done.stdout
    assert lux.load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def _interrupt_at_line(n: int) -> Callable[..., Any]:
    """A trace function raising KeyboardInterrupt at the ``n``-th line run outside torch
    (as Ctrl-C would, between two bytecodes); after raising, Python unsets it."""
    torch_dir = os.path.dirname(torch.__file__)
    seen = [0]

    def trace(frame: Any, event: str, arg: Any) -> Any:
        if event == "call":
            return None if frame.f_code.co_filename.startswith(torch_dir) else trace
        if event == "line":
            seen[0] += 1
            if seen[0] == n:
                raise KeyboardInterrupt
        return trace

    trace.seen = seen  # type: ignore[attr-defined]
    return trace


@pytest.mark.slow  # about 200 saves
def test_ctrl_c_anywhere_in_a_save_keeps_a_whole_file_and_leaves_no_temporary(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "c.pt"
    lux.save(path, {"step": 1})
    counter = _interrupt_at_line(0)
    sys.settrace(counter)
    try:
        lux.save(path, {"step": 2})
    finally:
        sys.settrace(None)
    lines = counter.seen[0]  # type: ignore[attr-defined]
    assert 20 < lines < 5000, lines
    for n in range(1, lines + 1):
        lux.save(path, {"step": 1})
        sys.settrace(_interrupt_at_line(n))
        try:
            lux.save(path, {"step": 2})
            interrupted = False
        except KeyboardInterrupt:
            interrupted = True
        finally:
            sys.settrace(None)
        assert interrupted, f"line {n}: the interrupt was lost"
        assert lux.load(path)["step"] in (1, 2), n  # the old file, or the new one complete
        assert [p.name for p in tmp_path.iterdir()] == ["c.pt"], (n, list(tmp_path.iterdir()))
