"""Crafted checkpoint files: each is refused with a CheckpointError naming the file, quickly.

Every file here is built by hand (zip layout with ``struct``, pickles opcode by opcode) from
what ``lux_torch.save`` writes, changed in one way. ``_torch_zip`` lays out an archive
exactly as torch's writer does (a test pins it byte for byte), so each crafted file differs
from a valid checkpoint only by the defect under test. Loads that used to crash the
interpreter or never finish run in a subprocess with a timeout, so a regression fails.
"""

from __future__ import annotations

import io
import os
import pathlib
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib
from collections.abc import Sequence

import pytest
import torch

import lux_torch as lux
from lux_torch.checkpoint import CheckpointError
from lux_torch.interop import checkpoint  # the module lux_torch.checkpoint aliases

_REPO = pathlib.Path(__file__).resolve().parents[1]
_MAX_MESSAGE = 2048


def _saved(tree: object) -> bytes:
    buffer = io.BytesIO()
    checkpoint._write(
        {
            "format": checkpoint.FORMAT,
            "version": 1,
            "structure": '{"t":"tensor","i":0}',
            "tensors": [tree],
        },
        buffer,
    )
    return buffer.getvalue()


def _members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


Member = tuple  # (name, data) or (name, data, stored bytes, method)


def _torch_zip(
    members: Sequence[Member], aliases: int = 0, extras: dict[str, bytes] | None = None
) -> bytes:
    """An archive laid out as torch.save (miniz) lays it out: data aligned to 64 bytes by an
    ``FB`` padding field, data descriptors, zip64 end records. A member may give its stored
    bytes and method; ``aliases`` more directory entries repeat the last member; ``extras``
    adds extra fields before the padding of the named local headers."""
    out, directory = bytearray(), bytearray()
    entries = []
    for member in members:
        name, data = member[0].encode(), member[1]
        stored, method = (member[2], member[3]) if len(member) > 2 else (data, 0)
        flags = 0x0808 if data else 0x0800
        more = (extras or {}).get(member[0], b"")
        pad = -(len(out) + 30 + len(name) + len(more) + 4) % 64
        extra = more + b"FB" + struct.pack("<H", pad) + b"Z" * pad
        header, crc = len(out), zlib.crc32(data)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 0, flags, method, 0, 0, 0, 0, 0,
                           len(name), len(extra))  # fmt: skip
        out += name + extra + stored
        if data:
            out += struct.pack("<4s3L", b"PK\x07\x08", crc, len(stored), len(data))
        entries.append((name, flags, method, crc, len(stored), len(data), header))
    entries += [entries[-1]] * aliases
    for name, flags, method, crc, csize, size, header in entries:
        directory += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 0, 0, flags, method, 0, 0, crc,
                                 csize, size, len(name), 0, 0, 0, 0, 0, header)  # fmt: skip
        directory += name
    at, n = len(out), len(entries)
    out += directory
    end64 = len(out)
    out += struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 0x031E, 0x2D, 0, 0, n, n,
                       len(directory), at)  # fmt: skip
    out += struct.pack("<4sLQL", b"PK\x06\x07", 0, end64, 1)
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(directory), at, 0)
    return bytes(out)


def test_the_crafting_writer_reproduces_torch_byte_for_byte() -> None:
    for tree in (torch.arange(1000.0), torch.zeros(0), torch.ones(3, dtype=torch.float16)):
        good = _saved(tree)
        assert _torch_zip(_members(good)) == good


def _patch_central(data: bytes, name: str, offset: int, fmt: str, value: int) -> bytes:
    """Overwrite a field of ``name``'s central-directory entry."""
    at = data.index(b"PK\x01\x02")
    while data[at + 46 : at + 46 + len(name)] != name.encode():
        at = data.index(b"PK\x01\x02", at + 1)
    return (
        data[: at + offset] + struct.pack(fmt, value) + data[at + offset + struct.calcsize(fmt) :]
    )


def _patch_local(data: bytes, name: str, offset: int, fmt: str, value: int) -> bytes:
    at = data.index(name.encode()) - 30  # the first copy of the name is in its local header
    return (
        data[: at + offset] + struct.pack(fmt, value) + data[at + offset + struct.calcsize(fmt) :]
    )


def _replace(members: list[tuple[str, bytes]], name: str, *new: Member) -> list[Member]:
    out: list[Member] = []
    for member in members:
        out.extend(new if member[0] == name else [member])
    return out


_T = torch.arange(6.0)  # 24 bytes in archive/data/0
_DATA0 = "archive/data/0"


def _dir_bit() -> bytes:
    return _patch_central(_saved(_T), _DATA0, 38, "<L", 0x10)  # DOS "directory" attribute


def _encrypted() -> bytes:
    data = _patch_central(_saved(_T), _DATA0, 8, "<H", 0x0809)
    return _patch_local(data, _DATA0, 6, "<H", 0x0809)


def _method(method: int) -> bytes:
    data = _patch_central(_saved(_T), _DATA0, 10, "<H", method)
    return _patch_local(data, _DATA0, 8, "<H", method)


def _duplicate_name() -> bytes:
    members = _members(_saved(_T))
    other = _members(_saved(torch.full((6,), 7.0)))[4]
    assert other[0] == _DATA0
    return _torch_zip(_replace(members, _DATA0, (_DATA0, dict(members)[_DATA0]), other))


def _deflate_bomb() -> bytes:
    """A record of 64 MiB of zeros, deflated to 64 KiB (the pickle asks for 16 Mi floats)."""
    numel = 16 * 2**20
    members = _members(_saved(torch.zeros(1)))
    big = bytes(numel * 4)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = deflater.compress(big) + deflater.flush()
    pkl = members[0][1].replace(b"K\x01t", b"J" + struct.pack("<i", numel) + b"t")
    assert pkl != members[0][1]
    members = _replace(members, "archive/data.pkl", ("archive/data.pkl", pkl))
    return _torch_zip(_replace(members, _DATA0, (_DATA0, big, packed, 8)))


def _shared_member() -> bytes:
    """1,500 more directory entries for one 64 KiB record (checked 1,501 times, not once)."""
    members = _members(_saved(torch.zeros(16 * 2**10)))
    data0 = next(m for m in members if m[0] == _DATA0)
    rest = [m for m in members if m[0] != _DATA0]
    return _torch_zip([*rest, data0], aliases=1500)


def _short_record() -> bytes:
    """The record holds 8 bytes; the pickle's storage needs 24 (6 floats)."""
    members = _members(_saved(_T))
    return _torch_zip(_replace(members, _DATA0, (_DATA0, bytes(8))))


def _extra_field() -> bytes:
    """An Info-ZIP Unicode-path field renaming data/0, for the readers that honour it."""
    path = b"archive/data/9"
    field = struct.pack("<HHBL", 0x7075, 5 + len(path), 1, zlib.crc32(_DATA0.encode())) + path
    return _torch_zip(_members(_saved(_T)), extras={_DATA0: field})


def _trailing_bytes() -> bytes:
    return _saved(_T) + b"appended after the end record"


def _pickle_member(pickle_bytes: bytes) -> bytes:
    members = _members(_saved(torch.zeros(0)))
    kept = [m for m in members if m[0] != _DATA0 and m[0] != "archive/data.pkl"]
    return _torch_zip([("archive/data.pkl", pickle_bytes), *kept])


def _text(s: str) -> bytes:
    return b"X" + struct.pack("<I", len(s.encode())) + s.encode()


def _payload_pickle(key_ops: bytes) -> bytes:
    """A checkpoint's wrapper dict, plus one more item whose key is built by ``key_ops``."""
    return (
        b"\x80\x02}q\x00("
        + _text("format")
        + _text(checkpoint.FORMAT)
        + _text("version")
        + b"K\x01"
        + _text("structure")
        + _text('{"t":"none"}')
        + _text("tensors")
        + b"]"
        + key_ops
        + b"K\x00u."
    )


def _nested_key(depth: int) -> bytes:
    return _pickle_member(_payload_pickle(b"N" + b"\x85" * depth))  # NONE, TUPLE1 * depth


def _doubling_key(times: int) -> bytes:
    # x -> (x, x) by memo: BINPUT 1, BINGET 1, TUPLE2; `times` levels share one object each
    return _pickle_member(_payload_pickle(b"N" + b"q\x01h\x01\x86" * times))


def _duplicate_json_key() -> bytes:
    members = _members(_saved(_T))
    pkl = members[0][1]
    old = _text('{"t":"tensor","i":0}')
    new = _text('{"t":"tensor","i":5,"i":0}')  # json.loads keeps the last: a valid index
    assert old in pkl
    return _torch_zip(
        _replace(members, "archive/data.pkl", ("archive/data.pkl", pkl.replace(old, new)))
    )


CRAFTED = {
    "directory_bit": (_dir_bit, "attributes"),
    "encrypted": (_encrypted, "flags"),
    "deflated": (lambda: _method(8), "compressed (method 8)"),
    "lzma": (lambda: _method(14), "compressed (method 14)"),
    "bzip2": (lambda: _method(12), "compressed (method 12)"),
    "duplicate_name": (_duplicate_name, "twice"),
    "deflate_bomb": (_deflate_bomb, "compressed (method 8)"),
    "shared_member": (_shared_member, "twice"),
    "short_record": (_short_record, "needs 24 bytes but its record is 8 bytes"),
    "extra_field": (_extra_field, "extra fields"),
    "trailing_bytes": (_trailing_bytes, "truncated or corrupt"),
    "key_nested_1000_deep": (lambda: _nested_key(1000), "deeper than"),
    "duplicate_json_key": (_duplicate_json_key, "twice"),
}


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_crafted_files_are_refused_naming_the_file(kind: str, tmp_path: pathlib.Path) -> None:
    make, problem = CRAFTED[kind]
    path = tmp_path / f"{kind}.pt"
    path.write_bytes(make())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # today's torch may warn about the odd file
        with pytest.raises(CheckpointError) as info:
            lux.load(path)
    message = str(info.value)
    assert str(path) in message and problem in message, message
    assert len(message) < _MAX_MESSAGE


def test_a_directory_is_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(CheckpointError, match=r"is a directory, not a regular file"):
        lux.load(tmp_path)


# ------------------------------------------------- loads that crashed or hung: in a subprocess

_LOAD_SCRIPT = """
import sys, lux_torch as lux
try:
    lux.load(sys.argv[1])
except lux.CheckpointError as err:
    print("CheckpointError:", err)
else:
    print("loaded without an error")
"""


def _load_in_subprocess(path: pathlib.Path, timeout: float = 30) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(_REPO), os.environ.get("PYTHONPATH", "")]),
    }
    try:
        done = subprocess.run(
            [sys.executable, "-c", _LOAD_SCRIPT, str(path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading {path.name} did not finish within {timeout} s")
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    return done.stdout


HOSTILE = {
    # torch's unpickler builds it, then hashing the key overflows the C stack: a segfault
    "key_nested_10**6_deep": (lambda: _nested_key(10**6), "deeper than"),
    # a key of 2**40 leaves in a few hundred bytes: hashing it never finishes
    "key_doubled_40_times": (lambda: _doubling_key(40), "far more objects"),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_pickles_are_refused_before_unpickling(kind: str, tmp_path: pathlib.Path) -> None:
    make, problem = HOSTILE[kind]
    path = tmp_path / "hostile.pt"
    path.write_bytes(make())
    out = _load_in_subprocess(path)
    assert out.startswith("CheckpointError:") and str(path) in out and problem in out, out
    assert len(out) < _MAX_MESSAGE


@pytest.mark.slow
def test_a_fifo_is_refused_without_blocking(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "ckpt.pt"
    os.mkfifo(fifo)
    out = _load_in_subprocess(fifo)
    assert out.startswith("CheckpointError:") and "FIFO" in out, out
    link = tmp_path / "link.pt"
    link.symlink_to(fifo)
    assert "FIFO" in _load_in_subprocess(link)
