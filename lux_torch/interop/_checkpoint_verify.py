"""Byte-level checks of a checkpoint file, run before any of it reaches ``torch.load``.

:func:`read_archive` accepts exactly the zip layout that ``torch.save`` (miniz, as used by
``lux_torch.save``) writes, and :func:`scan_pickle` exactly the pickle opcodes it writes for a
checkpoint's wrapper dict, with bounded nesting and object counts. Both raise
:class:`FormatError` with a short description of the first problem; ``lux_torch.checkpoint``
adds the file name. Memory stays bounded by the central directory and the pickle (both
small parts of a checkpoint); time is linear in the file size.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from typing import IO, Any

import torch

# ------------------------------------------------------------------------------- zip layout

_LOCAL, _CENTRAL, _DESCRIPTOR = b"PK\x03\x04", b"PK\x01\x02", b"PK\x07\x08"
_END, _END64, _LOCATOR64 = b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07"
_LOCAL_SIZE, _CENTRAL_SIZE, _END_SIZE, _END64_SIZE, _LOCATOR64_SIZE = 30, 46, 22, 56, 20
_U16, _U32 = 0xFFFF, 0xFFFFFFFF
_UTF8, _DESCRIPTOR_FLAG = 0x0800, 0x0008  # the only general-purpose flags the writer sets
_ZIP64_ID, _PADDING_ID = 0x0001, 0x4246  # extra-field ids: zip64 sizes, torch's "FB" padding
_CHUNK = 1 << 20

# member names below the archive folder that torch.save writes
_RECORD = re.compile(
    r"data\.pkl|byteorder|version|\.format_version|\.storage_alignment"
    r"|\.data/version|\.data/serialization_id|data/(0|[1-9][0-9]{0,18})"
)
_FOLDER = re.compile(r"[A-Za-z0-9_.-]{1,255}")


class FormatError(Exception):
    """The file is not exactly what ``lux_torch.save`` writes; the message says where."""


class UnsafeError(FormatError):
    """The pickle refers to or calls something other than torch's tensor rebuilders."""


@dataclass(frozen=True)
class Member:
    """One archive member: its name below the archive folder and where its bytes are."""

    name: str
    offset: int  # of the first data byte
    size: int
    crc: int


@dataclass(frozen=True)
class _Entry:
    name: bytes
    flags: int
    crc: int
    size: int
    header: int  # offset of the local header


def read_archive(f: IO[bytes], file_size: int) -> dict[str, Member]:
    """Check the zip layout of ``f`` (``file_size`` bytes) and every member's CRC-32.

    Accepted: members stored uncompressed, one after the other from offset 0 with no gap
    or overlap, unique names under one folder, no encryption, comments, attributes or
    extra fields other than zip64 sizes and torch's alignment padding, then the central
    directory, an optional zip64 end record and locator, and the end record, which ends
    the file. Returns the members by name below the folder.
    """
    if file_size < _END_SIZE:
        raise FormatError(f"the file is {file_size} bytes long, too short for a zip archive")
    count, cd_size, cd_offset, cd_end = _end_records(f, file_size)
    if cd_offset + cd_size != cd_end:
        raise FormatError("the zip central directory does not end where the end records start")
    if count * _CENTRAL_SIZE > cd_size:
        raise FormatError(f"the central directory is too small for {count} members")
    entries = _central_directory(_read(f, cd_offset, cd_size), count)
    members = _local_headers(f, entries, cd_offset)
    for member in members.values():
        if _crc32(f, member) != member.crc:
            raise FormatError(
                f"the archive member {member.name!r} fails its CRC-32 check (the file was "
                f"damaged after it was written)"
            )
    return members


def _end_records(f: IO[bytes], file_size: int) -> tuple[int, int, int, int]:
    """``(members, central directory size, offset, end)`` from the end records."""
    end = _read(f, file_size - _END_SIZE, _END_SIZE)
    sig, disk, cd_disk, on_disk, count, cd_size, cd_offset, comment = struct.unpack("<4s4H2LH", end)
    if sig != _END or comment != 0:
        raise FormatError(
            "the zip archive is truncated or corrupt: it does not end with its end record"
        )
    if disk or cd_disk or on_disk != count:
        raise FormatError("the zip archive spans several disks")
    locator_at = file_size - _END_SIZE - _LOCATOR64_SIZE
    if locator_at < 0 or _read(f, locator_at, 4) != _LOCATOR64:
        if _U16 in (count,) or _U32 in (cd_size, cd_offset):
            raise FormatError("the zip end record refers to a missing zip64 record")
        return count, cd_size, cd_offset, file_size - _END_SIZE
    _, disk, record_at, disks = struct.unpack("<4sLQL", _read(f, locator_at, _LOCATOR64_SIZE))
    if disk != 0 or disks != 1 or record_at != locator_at - _END64_SIZE:
        raise FormatError("the zip64 end-of-central-directory locator is inconsistent")
    record = _read(f, record_at, _END64_SIZE)
    sig, rest, _, _, disk, cd_disk, on_disk64, count64, cd_size64, cd_offset64 = struct.unpack(
        "<4sQ2H2L4Q", record
    )
    consistent = (
        sig == _END64
        and rest == _END64_SIZE - 12
        and disk == cd_disk == 0
        and on_disk64 == count64
        and count == min(count64, _U16)
        and cd_size == min(cd_size64, _U32)
        and cd_offset == min(cd_offset64, _U32)
    )
    if not consistent:
        raise FormatError("the zip64 end-of-central-directory record is inconsistent")
    return count64, cd_size64, cd_offset64, record_at


def _central_directory(cd: bytes, count: int) -> list[_Entry]:
    entries: list[_Entry] = []
    names: set[bytes] = set()
    at = 0
    for _ in range(count):
        if at + _CENTRAL_SIZE > len(cd) or cd[at : at + 4] != _CENTRAL:
            raise FormatError("the zip central directory is truncated or corrupt")
        fields = struct.unpack("<8x2H4x3L5H2L", cd[at : at + _CENTRAL_SIZE])
        flags, method, crc, csize, size, name_len, extra_len, comment_len = fields[:8]
        disk, internal, external, header = fields[8:]
        at += _CENTRAL_SIZE
        name, extra = cd[at : at + name_len], cd[at + name_len : at + name_len + extra_len]
        at += name_len + extra_len + comment_len
        shown = _show(name)
        if at > len(cd):
            raise FormatError("the zip central directory is truncated or corrupt")
        if name in names:
            raise FormatError(f"the archive holds the member {shown} twice")
        names.add(name)
        if method != 0:
            raise FormatError(
                f"the archive member {shown} is compressed (method {method}); lux_torch.save "
                f"stores every member uncompressed"
            )
        if flags & ~(_UTF8 | _DESCRIPTOR_FLAG) or flags & 1:
            raise FormatError(
                f"the archive member {shown} has general-purpose flags {flags:#06x} (encryption "
                f"or other features) that lux_torch.save never writes"
            )
        if comment_len or disk or internal or external:
            raise FormatError(
                f"the archive member {shown} has a comment, disk number or file attributes "
                f"(external {external:#x}) that lux_torch.save never writes"
            )
        zip64 = _zip64_fields(extra, size == _U32, header == _U32, shown)
        if size == _U32:
            size, csize = zip64.pop(0), zip64.pop(0)
        if header == _U32:
            header = zip64.pop(0)
        if csize != size:
            raise FormatError(f"the archive member {shown} has different stored and real sizes")
        if bool(flags & _DESCRIPTOR_FLAG) != (size > 0):
            raise FormatError(f"the archive member {shown} has flags {flags:#06x} for its size")
        entries.append(_Entry(name, flags, crc, size, header))
    if at != len(cd):
        raise FormatError("the zip central directory has bytes after its last entry")
    return entries


def _zip64_fields(extra: bytes, big_size: bool, big_offset: bool, shown: str) -> list[int]:
    """The 64-bit values of a zip64 extra field that must hold exactly what is flagged."""
    wanted = 2 * big_size + big_offset
    if not wanted:
        if extra:
            raise FormatError(f"the archive member {shown} has extra fields")
        return []
    if len(extra) != 4 + 8 * wanted or struct.unpack("<2H", extra[:4]) != (_ZIP64_ID, 8 * wanted):
        raise FormatError(f"the archive member {shown} has a malformed zip64 field")
    values = list(struct.unpack(f"<{wanted}Q", extra[4:]))
    if any(v < _U32 for v in values):
        raise FormatError(f"the archive member {shown} has a malformed zip64 field")
    return values


def _local_headers(f: IO[bytes], entries: list[_Entry], cd_offset: int) -> dict[str, Member]:
    """Check that the members tile the file before the central directory, in order."""
    members: dict[str, Member] = {}
    folder = b""
    cursor = 0
    for entry in entries:
        shown = _show(entry.name)
        if entry.header != cursor or cursor + _LOCAL_SIZE > cd_offset:
            raise FormatError(
                f"the archive member {shown} is not where the previous one ends (overlapping "
                f"or hidden data)"
            )
        header = _read(f, cursor, _LOCAL_SIZE)
        sig, _, flags, method, _, _, crc, csize, size, name_len, extra_len = struct.unpack(
            "<4s5H3L2H", header
        )
        data_at = cursor + _LOCAL_SIZE + name_len + extra_len
        if (
            sig != _LOCAL
            or (flags, method, crc, csize, size) != (entry.flags, 0, 0, 0, 0)
            or data_at + entry.size > cd_offset
            or _read(f, cursor + _LOCAL_SIZE, name_len) != entry.name
        ):
            raise FormatError(f"the local header of the archive member {shown} is inconsistent")
        big = entry.size >= _U32, cursor >= _U32
        _check_local_extra(_read(f, data_at - extra_len, extra_len), entry, big, shown)
        cursor = data_at + entry.size
        if entry.size:
            wide = any(big)
            fmt, length = ("<4sL2Q", 24) if wide else ("<4s3L", 16)
            if cursor + length > cd_offset or struct.unpack(fmt, _read(f, cursor, length)) != (
                _DESCRIPTOR,
                entry.crc,
                entry.size,
                entry.size,
            ):
                raise FormatError(f"the data descriptor of the archive member {shown} is wrong")
            cursor += length
        top, _, name = entry.name.partition(b"/")
        folder = folder or top
        text = name.decode("ascii", "replace")
        if top != folder or not _FOLDER.fullmatch(top.decode("ascii", "replace")):
            raise FormatError(f"the archive member {shown} is outside the archive folder")
        if not _RECORD.fullmatch(text):
            raise FormatError(f"the archive member {shown} is not a record torch.save writes")
        members[text] = Member(text, data_at, entry.size, entry.crc)
    if cursor != cd_offset:
        raise FormatError("the archive has bytes between its last member and its directory")
    if not entries or entries[0].name != folder + b"/data.pkl":
        raise FormatError("the archive does not start with its data.pkl record")
    return members


def _check_local_extra(extra: bytes, entry: _Entry, big: tuple[bool, bool], shown: str) -> None:
    """zip64 sizes exactly where needed, then torch's ``FB`` padding of ``Z`` bytes."""
    wanted = 2 * big[0] + big[1]
    if wanted:
        expected = [entry.size, entry.size][: 2 * big[0]] + [entry.header][: int(big[1])]
        zip64 = struct.pack(f"<2H{wanted}Q", _ZIP64_ID, 8 * wanted, *expected)
        if extra[: len(zip64)] != zip64:
            raise FormatError(f"the archive member {shown} has a malformed zip64 field")
        extra = extra[len(zip64) :]
    if extra:
        padding_id, length = struct.unpack("<2H", extra[:4]) if len(extra) >= 4 else (0, -1)
        if padding_id != _PADDING_ID or extra[4:] != b"Z" * length:
            raise FormatError(f"the archive member {shown} has extra fields")


def _crc32(f: IO[bytes], member: Member) -> int:
    crc, done = 0, 0
    f.seek(member.offset)
    while done < member.size:
        chunk = f.read(min(_CHUNK, member.size - done))
        if not chunk:
            raise FormatError(f"the archive member {member.name!r} is truncated")
        crc, done = zlib.crc32(chunk, crc), done + len(chunk)
    return crc


def _read(f: IO[bytes], offset: int, size: int) -> bytes:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise FormatError("the zip archive is truncated")
    return data


def _show(name: bytes) -> str:
    text = repr(name.decode("ascii", "backslashreplace"))
    return text if len(text) <= 80 else text[:77] + "..."


# ------------------------------------------------------------------------------- pickle scan

MAX_PICKLE_DEPTH = 32  # a checkpoint's wrapper pickle nests about 8 levels deep


@dataclass
class _Value:
    """What the scan knows of a value the unpickler would build."""

    depth: int
    nodes: int  # objects reachable from it, shared ones counted each time
    value: Any = None  # str/int/float/bool/None/tuple/global name, when needed
    kind: str = "leaf"  # "leaf", "list", "dict" or "tuple"
    open: bool = False  # a list/dict that may still receive items


_SIMPLE = {
    "NONE": None,
    "NEWTRUE": True,
    "NEWFALSE": False,
}
_REBUILD = {
    ("torch._utils", name)
    for name in (
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_qtensor",
        "_rebuild_meta_tensor_no_storage",
    )
}
_ORDERED_DICT = ("collections", "OrderedDict")
_UNTYPED = ("torch.storage", "UntypedStorage")


# torch.save names a storage by its legacy class (dtypes without one use UntypedStorage)
_LEGACY_STORAGES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexDoubleStorage": torch.complex128,
    "ComplexFloatStorage": torch.complex64,
    "QInt8Storage": torch.qint8,
    "QUInt8Storage": torch.quint8,
    "QInt32Storage": torch.qint32,
    "QUInt4x2Storage": torch.quint4x2,
    "QUInt2x4Storage": torch.quint2x4,
}


def _torch_global(name: str) -> bool:
    """Whether ``torch.<name>`` is a dtype, a quantization scheme or a storage class."""
    if name in _LEGACY_STORAGES:
        return True
    obj = getattr(torch, name, None) if name.isidentifier() and not name.startswith("_") else None
    return isinstance(obj, torch.dtype | torch.qscheme)


def _storage_item_size(storage_type: Any) -> int | None:
    """Bytes per element of a pickled storage type, ``None`` if it is not one."""
    if storage_type == ("global", *_UNTYPED):
        return 1
    if isinstance(storage_type, tuple) and storage_type[:2] == ("global", "torch"):
        dtype = _LEGACY_STORAGES.get(storage_type[2])
        return None if dtype is None else dtype.itemsize
    return None


def scan_pickle(data: bytes) -> dict[str, int]:
    """Check the opcodes of ``data.pkl`` and return the storages it refers to.

    Only the opcodes and globals that ``torch.save`` (protocol 2) writes for a dict of
    strings, ints and tensors are accepted; every value's nesting depth is bounded by
    :data:`MAX_PICKLE_DEPTH` and its object count (shared objects counted at every use)
    by the number of opcodes, so no nested or exponentially shared object reaches the
    unpickler. Returns ``{storage key: size in bytes}``.
    """
    import pickletools

    stack: list[_Value] = []
    marks: list[int] = []
    memo: dict[int, _Value] = {}
    storages: dict[str, int] = {}
    limit = 2 * len(data) + 1024  # objects beyond this mean shared objects are multiplied

    def pop_to_mark(op: str) -> list[_Value]:
        if not marks:
            raise FormatError(f"the pickle has {op} without a MARK")
        at = marks.pop()
        items = stack[at:]
        del stack[at:]
        return items

    def pop(n: int, op: str) -> list[_Value]:
        if len(stack) - (marks[-1] if marks else 0) < n:
            raise FormatError(f"the pickle's {op} finds too few values on its stack")
        items = stack[-n:]
        del stack[-n:]
        return items

    def compose(kind: str, items: list[_Value], value: Any = None) -> _Value:
        for item in items:
            item.open = False
        depth = 1 + max((i.depth for i in items), default=0)
        nodes = 1 + sum(i.nodes for i in items)
        if depth > MAX_PICKLE_DEPTH:
            raise FormatError(f"the pickle nests objects deeper than {MAX_PICKLE_DEPTH} levels")
        if nodes > limit:
            raise FormatError("the pickle builds far more objects than it has opcodes")
        return _Value(depth, nodes, value, kind)

    def add_items(op: str, items: list[_Value]) -> None:
        target = stack[-1] if stack and len(stack) > (marks[-1] if marks else 0) else None
        want = "dict" if op.startswith("SETITEM") else "list"
        if target is None or target.kind != want or not target.open:
            raise FormatError(f"the pickle's {op} does not add to a new {want}")
        if want == "dict" and any(type(k.value) is not str for k in items[::2]):
            raise FormatError("the pickle has a dict key that is not a string")
        grown = compose(want, [*items, _Value(target.depth - 1, target.nodes - 1)])
        target.depth, target.nodes = grown.depth, grown.nodes

    try:
        opcodes = pickletools.genops(data)
        for op, raw, at in opcodes:
            arg: Any = raw
            pos = at or 0
            name = op.name
            if name == "PROTO":
                if pos != 0 or arg != 2:
                    raise FormatError(f"the pickle uses protocol {arg}, not 2")
            elif name in ("BINUNICODE", "BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT"):
                stack.append(_Value(1, 1, arg))
            elif name in _SIMPLE:
                stack.append(_Value(1, 1, _SIMPLE[name]))
            elif name in ("EMPTY_LIST", "EMPTY_DICT"):
                stack.append(_Value(1, 1, None, name[6:].lower(), open=True))
            elif name == "EMPTY_TUPLE":
                stack.append(_Value(1, 1, (), "tuple"))
            elif name == "MARK":
                marks.append(len(stack))
            elif name in ("TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"):
                items = pop_to_mark(name) if name == "TUPLE" else pop(int(name[-1]), name)
                stack.append(compose("tuple", items, tuple(i.value for i in items)))
            elif name in ("APPEND", "SETITEM"):
                add_items(name, pop(1 if name == "APPEND" else 2, name))
            elif name in ("APPENDS", "SETITEMS"):
                items = pop_to_mark(name)
                if name == "SETITEMS" and len(items) % 2:
                    raise FormatError("the pickle's SETITEMS has an odd number of values")
                add_items(name, items)
            elif name in ("BINPUT", "LONG_BINPUT"):
                if not stack:
                    raise FormatError("the pickle memoizes from an empty stack")
                memo[arg] = stack[-1]
            elif name in ("BINGET", "LONG_BINGET"):
                if arg not in memo:
                    raise FormatError(f"the pickle refers to a memo entry {arg} it never made")
                memo[arg].open = False
                stack.append(memo[arg])
            elif name == "GLOBAL":
                module, _, attr = arg.partition(" ")
                known = (module, attr) in (*_REBUILD, _ORDERED_DICT, _UNTYPED)
                if not known and not (module == "torch" and _torch_global(attr)):
                    raise UnsafeError(f"the pickle refers to {module}.{attr}")
                stack.append(_Value(1, 1, ("global", module, attr)))
            elif name == "REDUCE":
                func, args = pop(2, name)
                target = func.value[1:] if isinstance(func.value, tuple) else None
                if args.kind != "tuple" or target not in (*_REBUILD, _ORDERED_DICT):
                    raise UnsafeError("the pickle calls something other than a tensor rebuild")
                if target == _ORDERED_DICT:
                    if args.value != ():
                        raise FormatError("the pickle builds an OrderedDict from arguments")
                    stack.append(_Value(1, 1, None, "dict", open=True))
                else:
                    stack.append(compose("leaf", [func, args]))
            elif name == "BINPERSID":
                (pid,) = pop(1, name)
                key, size = _storage_record(pid.value)
                if storages.setdefault(key, size) != size:
                    raise FormatError(f"the pickle gives the storage {key!r} two sizes")
                stack.append(_Value(1, 1))
            elif name == "STOP":
                if len(stack) != 1 or marks or pos + 1 != len(data):
                    raise FormatError("the pickle does not end after one complete object")
                return storages
            else:
                raise UnsafeError(f"the pickle has a {name} opcode that torch.save never writes")
    except (ValueError, EOFError, struct.error, UnicodeDecodeError) as err:  # malformed bytes
        raise FormatError(f"the pickle is malformed ({str(err)[:200]})") from None
    raise FormatError("the pickle ends without a STOP opcode")


def _storage_record(pid: Any) -> tuple[str, int]:
    """``(key, bytes)`` of a persistent id ``('storage', type, key, location, numel)``."""
    valid = (
        isinstance(pid, tuple)
        and len(pid) == 5
        and pid[0] == "storage"
        and type(pid[2]) is str
        and type(pid[3]) is str
        and type(pid[4]) is int
        and pid[4] >= 0
    )
    item_size = _storage_item_size(pid[1]) if valid else None
    if item_size is None:
        raise FormatError("the pickle has a persistent id that is not a tensor storage")
    return pid[2], pid[4] * item_size
