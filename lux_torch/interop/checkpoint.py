"""Safe, atomic checkpoints: :func:`save` and :func:`load`.

``lux.save(path, tree)`` writes a tree of tensors, Python scalars, strings, containers and
static mode flags to one file; ``lux.load(path)`` gives the same tree back::

    lux.save("run/ckpt.pt", {"ps": ps, "st": st, "opt_state": opt_state, "step": 1200})
    ckpt = lux.load("run/ckpt.pt", map_location="cpu")

What a checkpoint holds
    * tensors (``torch.Tensor`` and ``nn.Parameter``, strided layout, any dtype and device;
      saved detached, so they load as plain tensors without ``requires_grad``; the same
      tensor *object* at several places in the tree loads as one tensor object, so tied
      weights stay tied; a view of a larger storage is saved as a compact copy of itself);
    * ``None``, ``bool``, ``int``, ``float`` (bit-exact, ``nan``/``inf``/``-0.0``
      included), ``complex`` and ``str`` values;
    * ``list``, ``tuple``, ``dict`` and ``collections.OrderedDict`` containers (dict keys
      ``str`` or ``int``; key order is kept);
    * :class:`lux_torch.tree.Static` mode flags (``st["training"]``) whose value is one of
      the scalars above or a tuple of them.

    So ``ps``/``st`` from :func:`lux_torch.setup`, the states of :mod:`lux_torch.optim`
    (dicts and tuples of tensors) and :func:`lux_torch.state_dict` dicts round-trip exactly:
    same structure, container types, dtypes, shapes and bit-identical values. Anything
    else (a ``TrainState``, a namedtuple, a numpy array, a layer, a function) is refused
    with a :class:`TypeError` that names the path of the value in the tree and its type,
    before anything is written; save ``{"params": ts.params, "states": ts.states,
    "opt_state": ts.opt_state, "step": ts.step}`` rather than a ``TrainState``.

File format (version 1)
    The file is a ``torch.save`` zip archive (pickle protocol 2) whose pickled object is
    the plain dict::

        {"format": "lux_torch.checkpoint",   # identifies the file
         "version": 1,                       # format version
         "structure": "<JSON text>",         # the tree, with tensors as references
         "tensors": [tensor_0, tensor_1, ...]}

    ``structure`` is JSON in which every node is an object with a tag ``"t"``:
    ``{"t": "tensor", "i": index into "tensors"}``, ``{"t": "none"}``,
    ``{"t": "bool" | "int" | "str", "v": value}``, ``{"t": "float", "v": float.hex()}``,
    ``{"t": "complex", "re": float.hex(), "im": float.hex()}``,
    ``{"t": "list" | "tuple", "items": [node, ...]}``,
    ``{"t": "dict" | "odict", "items": [[key node, value node], ...]}`` and
    ``{"t": "static", "v": node}``; no object repeats a key, and there are no
    ``NaN``/``Infinity`` literals.

What :func:`load` accepts
    Exactly what :func:`save` writes; everything is checked before a byte is unpickled:

    * a regular file (symlinks are followed; a FIFO, device or directory is refused
      without being opened for reading);
    * zip layout as torch's writer makes it: members one after the other from offset 0,
      with no gap, overlap or duplicate name, each *stored* (method 0, never compressed),
      with only the UTF-8 and data-descriptor flags (no encryption), no comment, disk
      number or file attributes, no extra fields but zip64 sizes where a size or offset
      needs them and torch's ``FB`` alignment padding, followed by its data descriptor;
      then the central directory, an optional zip64 end record and locator, and the end
      record without a comment, which ends the file. Every member passes its CRC-32;
    * members named ``<folder>/<record>`` under one folder, the first being
      ``data.pkl``, the others among ``byteorder``, ``version``, ``.format_version``,
      ``.storage_alignment``, ``.data/version``, ``.data/serialization_id`` and
      ``data/<n>``; each ``data/<n>`` is a tensor storage the pickle refers to, of exactly
      the size it gives (elements times element size), and no other is present;
    * a ``data.pkl`` made of the opcodes torch writes for the dict above (protocol 2:
      strings, ints, floats, booleans, ``None``, tuples, lists, dicts, memo, ``GLOBAL`` of
      torch's tensor rebuild functions, dtypes, quantization schemes, storage classes and
      ``OrderedDict``, ``REDUCE`` of those, storage persistent ids), with dict keys that
      are strings, every value nested at most 32 levels deep and no more objects built
      (shared ones counted at every use) than the pickle has opcodes allow.

    The checks take time linear in the file size and memory bounded by the central
    directory and the pickle. Then the pickle is read with
    ``torch.load(weights_only=True)`` and the tree rebuilt from the JSON, checking every
    node. Any other file raises :class:`CheckpointError` naming the file and the problem,
    in a message of at most a few hundred characters; no other exception comes out of a
    load except ``FileNotFoundError``/``PermissionError`` for a file that cannot be opened.

Safety
    Loading never executes code from the file: a pickle that refers to any other Python
    object is refused before unpickling, and ``torch.load(weights_only=True)`` refuses
    one again. A file holding other pickled objects, a foreign file (a plain
    ``torch.save`` of a tensor, a pickle, JSON, random bytes) or a corrupt or truncated
    checkpoint raises :class:`CheckpointError`, naming the file and the problem.

    A save first checks the whole tree, then writes a temporary file
    ``.<name>.<random>.tmp`` (owner-only permissions) in the target's directory, flushes
    and ``fsync`` s it, renames it over the target with ``os.replace`` (atomic) and
    ``fsync`` s the directory where the platform allows. A full disk or any other write
    error raises ``OSError`` and Ctrl-C raises ``KeyboardInterrupt`` wherever it lands
    (torch's zip writer would turn both into a ``RuntimeError``). A save that fails or is
    interrupted at any point leaves the previous file untouched and removes its temporary
    file; only a hard crash (power loss, ``SIGKILL``) can leave a stray temporary file next
    to the target, never a half-written target.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import pickle
import reprlib
import secrets
import stat
from collections.abc import Callable, Iterator
from typing import IO, Any

import torch

from ..tree import Static
from ._checkpoint_verify import FormatError, UnsafeError, read_archive, scan_pickle

__all__ = ["FORMAT", "VERSION", "CheckpointError", "load", "save"]

#: The format name every checkpoint records; :func:`load` accepts no other.
FORMAT = "lux_torch.checkpoint"
#: The format version :func:`save` writes and :func:`load` reads.
VERSION = 1

PathLike = str | os.PathLike[str]
# as torch.load's map_location: the function maps (storage, location) to a storage
MapLocation = str | torch.device | dict[str, str] | Callable[[Any, str], Any] | None

_SCALARS = (type(None), bool, int, float, complex, str)
_MAX_DEPTH = 100  # deeper trees are refused instead of overflowing the Python stack
_PICKLE_PROTOCOL = 2  # what torch.save writes by default; load accepts only this


class CheckpointError(ValueError):
    """A file is not a readable lux_torch checkpoint (foreign, corrupt, truncated or unsafe).

    The message names the file and the problem.
    """


# ----------------------------------------------------------------------------- encoding


class _Encoder:
    """Turns a tree into ``(structure, tensors)``, checking every value on the way."""

    def __init__(self) -> None:
        self.tensors: list[torch.Tensor] = []
        self.index: dict[int, int] = {}  # id(tensor) -> position in self.tensors
        self.active: set[int] = set()  # ids of the containers being encoded (cycles)

    def encode(self, x: Any, path: tuple[str, ...]) -> dict[str, Any]:
        if len(path) > _MAX_DEPTH:
            raise ValueError(
                f"lux_torch.save: the tree is nested deeper than {_MAX_DEPTH} levels at "
                f"{_where(path[:8])}..."
            )
        if isinstance(x, torch.Tensor):
            return self._tensor(x, path)
        kind = type(x)
        if kind in _SCALARS:
            return _scalar(x)
        if kind is Static:
            return {"t": "static", "v": self._static_value(x.value, path)}
        if kind in (list, tuple, dict, collections.OrderedDict):
            if id(x) in self.active:
                raise ValueError(
                    f"lux_torch.save: the tree contains itself (a reference cycle) at "
                    f"{_where(path)}"
                )
            self.active.add(id(x))
            try:
                if kind is list or kind is tuple:
                    items: list[Any] = [self.encode(v, (*path, str(i))) for i, v in enumerate(x)]
                    return {"t": kind.__name__, "items": items}
                pairs = [
                    [self._key(k, path), self.encode(v, (*path, str(k)))] for k, v in x.items()
                ]
                return {"t": "dict" if kind is dict else "odict", "items": pairs}
            finally:
                self.active.discard(id(x))
        raise _unsupported(x, path)

    def _tensor(self, t: torch.Tensor, path: tuple[str, ...]) -> dict[str, Any]:
        if type(t) not in (torch.Tensor, torch.nn.Parameter):
            raise _unsupported(t, path, "tensor subclasses cannot be loaded safely")
        if t.layout != torch.strided:
            raise _unsupported(t, path, f"only strided tensors are supported, not {t.layout}")
        if id(t) not in self.index:
            self.index[id(t)] = len(self.tensors)
            self.tensors.append(_compact(t))
        return {"t": "tensor", "i": self.index[id(t)]}

    def _key(self, k: Any, path: tuple[str, ...]) -> dict[str, Any]:
        if type(k) not in (str, int):
            raise TypeError(
                f"lux_torch.save: dict keys must be str or int, got the key {k!r} of type "
                f"{_type_name(k)} at {_where(path)}"
            )
        return _scalar(k)

    def _static_value(self, v: Any, path: tuple[str, ...]) -> dict[str, Any]:
        if type(v) in _SCALARS:
            return _scalar(v)
        if type(v) is tuple:
            return {"t": "tuple", "items": [self._static_value(e, path) for e in v]}
        raise TypeError(
            f"lux_torch.save: cannot save Static({v!r}) at {_where(path)}: a static value "
            f"must be None, bool, int, float, complex, str or a tuple of these, got "
            f"{_type_name(v)}"
        )


def _scalar(x: Any) -> dict[str, Any]:
    if x is None:
        return {"t": "none"}
    if type(x) is float:
        return {"t": "float", "v": x.hex()}
    if type(x) is complex:
        return {"t": "complex", "re": x.real.hex(), "im": x.imag.hex()}
    return {"t": type(x).__name__, "v": x}  # bool, int, str


def _compact(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached, with conj/neg bits resolved; a copy if it views a larger storage
    (``torch.save`` writes whole storages)."""
    t = t.detach().resolve_conj().resolve_neg()
    owns_storage = (
        t.storage_offset() == 0 and t.untyped_storage().nbytes() == t.numel() * t.element_size()
    )
    return t if owns_storage else t.clone(memory_format=torch.contiguous_format)


def _where(path: tuple[str, ...]) -> str:
    return f"path {'.'.join(path)!r}" if path else "the root of the tree"


def _type_name(x: Any) -> str:
    kind = type(x)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _unsupported(x: Any, path: tuple[str, ...], why: str = "") -> TypeError:
    reason = why or (
        "a checkpoint holds tensors, None, bool, int, float, complex, str, list, tuple, "
        "dict and lux_torch.tree.Static values only"
    )
    return TypeError(f"lux_torch.save: cannot save the {_type_name(x)} at {_where(path)}: {reason}")


# ----------------------------------------------------------------------------- decoding


class _Decoder:
    """Rebuilds a tree from a JSON structure and the loaded tensors, checking every node."""

    def __init__(self, name: str, tensors: list[torch.Tensor]) -> None:
        self.name = name
        self.tensors = tensors

    def fail(self, problem: str) -> CheckpointError:
        return CheckpointError(f"{self.name}: invalid lux_torch checkpoint: {problem}")

    def decode(self, node: Any, depth: int = 0, static: bool = False) -> Any:
        if depth > _MAX_DEPTH + 2:
            raise self.fail(f"the structure is nested deeper than {_MAX_DEPTH} levels")
        if not isinstance(node, dict) or not isinstance(node.get("t"), str):
            raise self.fail(f"a structure node is not a tagged object: {_short(node)}")
        tag = node["t"]
        try:
            if tag == "none":
                return None
            if tag in ("bool", "int", "str"):
                value = node["v"]
                if type(value).__name__ != tag:
                    raise self.fail(f"a {tag} node holds {_short(value)}")
                return value
            if tag == "float":
                return float.fromhex(node["v"])
            if tag == "complex":
                return complex(float.fromhex(node["re"]), float.fromhex(node["im"]))
            if tag == "tuple":
                return tuple(self.decode(v, depth + 1, static) for v in self._list(node, "items"))
            if static:
                raise self.fail(f"a static value holds a {tag!r} node")
            if tag == "tensor":
                i = node["i"]
                if type(i) is not int or not 0 <= i < len(self.tensors):
                    raise self.fail(
                        f"a tensor reference {_short(i)} is out of range (the file holds "
                        f"{len(self.tensors)} tensors)"
                    )
                return self.tensors[i]
            if tag == "list":
                return [self.decode(v, depth + 1) for v in self._list(node, "items")]
            if tag in ("dict", "odict"):
                out = {} if tag == "dict" else collections.OrderedDict()
                for pair in self._list(node, "items"):
                    if not isinstance(pair, list) or len(pair) != 2:
                        raise self.fail(f"a dict item is not a [key, value] pair: {_short(pair)}")
                    key = self.decode(pair[0], depth + 1, static=True)
                    if type(key) not in (str, int):
                        raise self.fail(f"a dict key is {_short(key)}, not a str or int")
                    out[key] = self.decode(pair[1], depth + 1)
                return out
            if tag == "static":
                return Static(self.decode(node["v"], depth + 1, static=True))
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            if isinstance(err, CheckpointError):
                raise
            raise self.fail(f"a malformed {tag!r} node {_short(node)} ({err!r})") from err
        raise self.fail(f"unknown node type {tag!r}")

    def _list(self, node: dict[str, Any], field: str) -> list[Any]:
        items = node[field]
        if not isinstance(items, list):
            raise self.fail(f"the {field!r} of a {node['t']!r} node is not a list")
        return items


def _bounded_repr() -> reprlib.Repr:
    r = reprlib.Repr()  # Python 3.10 and 3.11 take no constructor arguments
    r.maxlevel, r.maxstring, r.maxother = 3, 60, 60
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = 4
    return r


_REPR = _bounded_repr()


def _short(x: Any, limit: int = 80) -> str:
    """A repr of ``x`` of at most ``limit`` characters, whatever its size or depth."""
    text = _REPR.repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- public API


def save(path: PathLike, tree: Any) -> None:
    """Save ``tree`` to ``path`` atomically (see the module docstring for what it may hold).

    The whole tree is checked before anything is written; the file is written to a
    temporary file next to ``path``, flushed, ``fsync`` ed and renamed over ``path``. If
    the save fails or is interrupted, a previous file at ``path`` is left as it was and
    the temporary file is removed. An existing file keeps its permission bits; a new one
    gets the default ones (``0o666`` less the umask).

    Arguments:
        path: the file to write (``str`` or ``os.PathLike``); its directory must exist.
        tree: a tree of tensors, ``None``/``bool``/``int``/``float``/``complex``/``str``
            values, ``list``/``tuple``/``dict``/``OrderedDict`` containers and
            :class:`~lux_torch.tree.Static` flags, e.g. ``{"ps": ps, "st": st}``.

    Raises:
        TypeError: a value in the tree cannot be saved (the message names its path and
            type), or a dict key is not a ``str`` or ``int``.
        ValueError: the tree contains a reference cycle or is nested too deeply.
        OSError: the file cannot be written (missing directory, permissions, full disk),
            also when the error happens inside torch's zip writer.
        KeyboardInterrupt: Ctrl-C during the save (the previous file is kept).

    Example:
        >>> lux.save("ckpt.pt", {"ps": ps, "st": st, "step": 10})
    """
    target = os.path.abspath(os.fspath(path))
    encoder = _Encoder()
    structure = encoder.encode(tree, ())
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "structure": json.dumps(structure, allow_nan=False, separators=(",", ":")),
        "tensors": encoder.tensors,
    }
    directory, name = os.path.split(target)
    mode = _file_mode(target)
    for attempt in range(100):
        # The name is chosen before the file exists, so whatever interrupts the save (even
        # right after the file is created) knows which file to remove.
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.tmp")
        f: IO[bytes] | None = None
        try:
            f = open(tmp, "xb", opener=_private)  # noqa: SIM115 (closed below, errors too)
            _write(payload, f)
            f.flush()
            os.fsync(f.fileno())
            f.close()
            if mode is not None:
                os.chmod(tmp, mode)
            os.replace(tmp, target)
        except FileExistsError:
            if f is not None or attempt == 99:
                _abandon(f, tmp)  # (only when the error did not come from creating the file)
                raise
            continue  # another file has this random name: it is not ours, try another name
        except BaseException:
            _abandon(f, tmp)
            raise
        break
    _fsync_directory(directory)


def load(path: PathLike, map_location: MapLocation = None) -> Any:
    """Load a tree written by :func:`save`, without executing anything from the file.

    Arguments:
        path: the checkpoint file (``str`` or ``os.PathLike``).
        map_location: where to put the tensors, as in ``torch.load``: ``None`` (where they
            were saved), a device string such as ``"cpu"``, a ``torch.device``, a dict
            mapping device names or a function.

    Returns:
        The saved tree: same structure, container types and key order, tensors with the
        saved dtypes, shapes and values (detached; contiguous unless saved otherwise).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is not exactly what :func:`save` writes (see "What
            load accepts" in the module docstring): a plain ``torch.save`` file, a pickle,
            a FIFO, device or directory, any other file; or it is corrupt or truncated,
            holds pickled Python objects other than tensors and plain containers (refused
            unexecuted), or was written by a newer format version. The message names the
            file and the problem.

    Example:
        >>> ckpt = lux.load("ckpt.pt", map_location="cpu")
        >>> ps, st = ckpt["ps"], ckpt["st"]
    """
    name = os.fspath(path)
    with _open_regular_file(name) as f:
        _verify(name, f)
        f.seek(0)
        try:
            payload = torch.load(f, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            raise CheckpointError(
                f"{name}: refused to load: the file holds pickled Python objects that a "
                f"lux_torch checkpoint never contains, and unpickling them could execute code "
                f"from the file; nothing was loaded ({_first_line(err)})"
            ) from err
        except Exception as err:
            raise CheckpointError(
                f"{name}: not a valid lux_torch checkpoint: the archive cannot be read, it is "
                f"corrupt or truncated ({_first_line(err)})"
            ) from err
    return _unpack(name, payload)


# ----------------------------------------------------------------------------- helpers


def _write(payload: dict[str, Any], f: IO[bytes]) -> None:
    """Serialize ``payload`` into the open file ``f``.

    When writing to ``f`` fails (a full disk) or is interrupted (Ctrl-C), torch reports a
    ``RuntimeError`` from its zip writer whose context is the real error; that error, the
    ``OSError`` or ``KeyboardInterrupt``, is raised instead.
    """
    try:
        torch.save(payload, f, pickle_protocol=_PICKLE_PROTOCOL)
    except Exception as err:
        cause = _write_error_cause(err)
        if cause is None:
            raise
        raise cause.with_traceback(cause.__traceback__) from None


def _write_error_cause(err: BaseException) -> BaseException | None:
    """The ``KeyboardInterrupt`` or ``OSError`` behind ``err`` (its context chain), if any."""
    seen: list[BaseException] = []
    cause: BaseException | None = err.__context__
    while cause is not None and len(seen) < 16 and all(cause is not s for s in seen):
        seen.append(cause)
        cause = cause.__context__
    for kind in (KeyboardInterrupt, OSError):
        found = next((c for c in seen if isinstance(c, kind)), None)
        if found is not None:
            return found
    return None


@contextlib.contextmanager
def _open_regular_file(name: str) -> Iterator[IO[bytes]]:
    """Open ``name`` for reading if it is a regular file (after symlinks), else refuse.

    A FIFO, device or directory is refused before it is opened (opening a FIFO blocks); the
    file is opened non-blocking and checked again, so one swapped in meanwhile is refused too.
    """
    _require_regular(name, os.stat(name).st_mode)
    fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        _require_regular(name, os.fstat(fd).st_mode)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


def _require_regular(name: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = (
            "a directory"
            if stat.S_ISDIR(mode)
            else "a FIFO (named pipe)"
            if stat.S_ISFIFO(mode)
            else "a device or other special file"
        )
        raise CheckpointError(
            f"{name}: not a lux_torch checkpoint: it is {kind}, not a regular file; "
            f"nothing was read from it"
        )


def _verify(name: str, f: IO[bytes]) -> None:
    """Refuse anything but exactly what :func:`save` writes; no byte is unpickled here."""
    magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise CheckpointError(
            f"{name}: not a lux_torch checkpoint: the file is not a zip archive as written "
            f"by lux_torch.save (it starts with {magic!r})"
        )
    try:
        members = read_archive(f, os.fstat(f.fileno()).st_size)
        pkl = members["data.pkl"]
        f.seek(pkl.offset)
        storages = scan_pickle(f.read(pkl.size))
    except UnsafeError as err:
        raise CheckpointError(
            f"{name}: refused to load: {err}, which a lux_torch checkpoint never contains, and "
            f"unpickling it could execute code from the file; nothing was loaded"
        ) from None
    except FormatError as err:
        problem = str(err)
        kind = "corrupt" if "CRC-32" in problem else "not a valid"
        raise CheckpointError(f"{name}: {kind} lux_torch checkpoint: {problem}") from None
    records = {k[5:]: m.size for k, m in members.items() if k.startswith("data/")}
    for key, size in storages.items():
        if records.get(key) != size:
            found = "missing" if key not in records else f"{records[key]} bytes"
            raise CheckpointError(
                f"{name}: not a valid lux_torch checkpoint: the tensor storage {_short(key)} "
                f"needs {size} bytes but its record is {found}"
            )
    unused = sorted(set(records) - set(storages))
    if unused:
        raise CheckpointError(
            f"{name}: not a valid lux_torch checkpoint: the records "
            f"{_short(unused)} belong to no tensor"
        )


def _unpack(name: str, payload: Any) -> Any:
    """Check the loaded wrapper dict and rebuild the tree from it."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        what = (
            f"a dict with keys {_short(list(payload)[:8], 200)}"
            if isinstance(payload, dict)
            else f"a {_type_name(payload)}"
        )
        raise CheckpointError(
            f"{name}: not a lux_torch checkpoint: it holds {what}, not a tree written by "
            f"lux_torch.save (use torch.load for plain torch.save files)"
        )
    version = payload.get("version")
    if type(version) is not int or version < 1:
        raise CheckpointError(f"{name}: invalid lux_torch checkpoint: bad version {version!r}")
    if version > VERSION:
        raise CheckpointError(
            f"{name}: the checkpoint has format version {version}, newer than the version "
            f"{VERSION} this lux_torch reads; upgrade lux_torch to load it"
        )
    tensors, structure = payload.get("tensors"), payload.get("structure")
    if not isinstance(tensors, list) or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise CheckpointError(
            f"{name}: invalid lux_torch checkpoint: 'tensors' is not a list of tensors"
        )
    if not isinstance(structure, str):
        raise CheckpointError(f"{name}: invalid lux_torch checkpoint: 'structure' is not a string")
    try:
        node = json.loads(structure, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:
        raise CheckpointError(
            f"{name}: invalid lux_torch checkpoint: the structure is not valid JSON "
            f"({_first_line(err)})"
        ) from err
    return _Decoder(name, tensors).decode(node)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's dict, refusing a key given twice (``save`` never writes one)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        keys = [k for k, _ in pairs]
        twice = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"a JSON object has the key {_short(twice)} twice")
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"the JSON has the constant {name}, which lux_torch.save never writes")


def _first_line(err: BaseException, limit: int = 300) -> str:
    text = str(err).strip().splitlines()
    line = f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _private(path: str, flags: int) -> int:
    """Opener for the temporary file: readable by its owner only until it is complete."""
    return os.open(path, flags, 0o600)


def _abandon(f: IO[bytes] | None, tmp: str) -> None:
    """Close and remove the temporary file of a failed save, if it was created."""
    if f is not None:
        with contextlib.suppress(OSError):
            f.close()  # may flush (and fail) again
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def _file_mode(target: str) -> int | None:
    """Permission bits for the new file: the existing file's, else 0o666 less the umask."""
    try:
        return os.stat(target).st_mode & 0o7777
    except OSError:
        pass
    umask = _umask()
    return None if umask is None else 0o666 & ~umask


def _umask() -> int | None:
    """The process umask, read without changing it (Linux); ``None`` where unknown."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _fsync_directory(directory: str) -> None:
    """Make the rename durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
