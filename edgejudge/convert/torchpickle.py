"""The pickle of a PyTorch zip checkpoint (``<root>/data.pkl``), read without torch and without trusting it.

Safety: the pickle is read by :class:`RestrictedUnpickler`, whose ``find_class`` is the only gate through
which a pickle can name Python objects (GLOBAL, STACK_GLOBAL, INST, OBJ and EXT opcodes all go through it).
It allows exactly ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the ``torch.*Storage``
classes of :data:`STORAGE_DTYPES`; none of them is imported: each is mapped to a local stand-in (a plain
OrderedDict, a callable returning a :class:`TensorRef` descriptor, a dtype marker). Any other global raises
:class:`~edgejudge.errors.UnsafePickleError` naming it the moment the opcode is read, before a REDUCE
could call it. Persistent ids must be ``('storage', <storage marker>, key, location, numel)``.

Nothing a pickle does outlives its own load: every load builds its own allow-list (fresh marker and
rebuild objects), and every stand-in is a frozen, slotted dataclass, so BUILD (``__setstate__`` /
``__dict__`` update / setattr) cannot modify one even within the load (it raises :class:`MutationRefused`,
which the zip reader reports as a corrupt pickle). ``collections.OrderedDict`` is an immutable built-in
type.

Memory: before any unpickling, :func:`check_pickle` walks the opcode stream with ``pickletools.genops``
(which allocates nothing per memo index) and refuses, as ``ConversionError`` naming the shard and member:
a pickle over ``MAX_PICKLE_BYTES`` or ``MAX_PICKLE_OPS`` opcodes, a protocol above 5, a memo index
(PUT/GET) beyond the number of opcodes read so far (the "memo bomb": one LONG_BINPUT near 2^28 makes
Python's unpickler allocate 4 GB), a FRAME longer than the rest of the data, integers over 128 bits,
out-of-band buffers and the copyreg extension registry. Containers can only grow by one opcode per item,
so what the unpickler builds is bounded by the pickle's length. The zip archive around the pickle is
:mod:`edgejudge.convert.torchzip`'s.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..errors import ConversionError, UnsafePickleError
from .limits import (
    MAX_DIM,
    MAX_DIMS,
    MAX_PICKLE_BYTES,
    MAX_PICKLE_INT_BITS,
    MAX_PICKLE_OPS,
    MAX_PICKLE_PROTOCOL,
    shown,
)

__all__ = [
    "STORAGE_DTYPES",
    "MutationRefused",
    "StorageMarker",
    "StorageRef",
    "TensorRef",
    "RestrictedUnpickler",
    "check_pickle",
]

#: ``torch.<Name>Storage`` → edgejudge dtype code. Only these storage names are accepted; they are data
#: markers, never imported. Another ``torch.*Storage`` name is reported as an unsupported dtype.
STORAGE_DTYPES: dict[str, str] = {
    "BFloat16Storage": "BF16",
    "HalfStorage": "F16",
    "FloatStorage": "F32",
    "LongStorage": "I64",  # only for ``*position_ids`` buffers, which the reader skips
}

_REDOWNLOAD = "re-download the shard"


class MutationRefused(Exception):
    """Raised when a pickle's BUILD targets one of the stand-ins (reported as a ConversionError)."""


def _refuse_setstate(self: Any, state: Any) -> None:
    """``__setstate__`` of every stand-in: BUILD may not modify them (dataclass(frozen=True, slots=True)
    would otherwise add a ``__setstate__`` that sets the fields, frozen or not)."""
    raise MutationRefused(type(self).__name__)


@dataclass(frozen=True, slots=True)
class StorageMarker:
    """Stand-in for a ``torch.XStorage`` class named by the pickle (one fresh instance per load)."""

    qualname: str
    dtype: str

    __setstate__ = _refuse_setstate


@dataclass(frozen=True, slots=True)
class StorageRef:
    """A storage named by a persistent id: ``data/<key>`` holding ``numel`` elements of ``dtype``."""

    key: str
    dtype: str
    numel: int

    __setstate__ = _refuse_setstate


@dataclass(frozen=True, slots=True)
class TensorRef:
    """What ``_rebuild_tensor_v2`` would have built: a view of a storage (offset/stride in elements)."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    __setstate__ = _refuse_setstate


def _is_int_tuple(value: Any) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) <= MAX_DIMS
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_DIM for v in value)
    )


@dataclass(frozen=True, slots=True)
class _Rebuild:
    """Stand-in for ``torch._utils._rebuild_tensor_v2`` (one fresh instance per load): validates the
    arguments and returns a TensorRef, builds nothing."""

    source: str

    __setstate__ = _refuse_setstate

    def __call__(
        self,
        storage: Any,
        storage_offset: Any,
        size: Any,
        stride: Any,
        requires_grad: Any = False,
        backward_hooks: Any = None,
        metadata: Any = None,
    ) -> TensorRef:
        if not isinstance(storage, StorageRef):
            raise ConversionError(
                f"{self.source}: corrupt checkpoint pickle: a tensor is not backed by a storage",
                hint="re-download the shard; it was not written by torch.save",
            )
        if (
            not isinstance(storage_offset, int)
            or isinstance(storage_offset, bool)
            or not 0 <= storage_offset <= MAX_DIM
            or not _is_int_tuple(size)
        ):
            raise ConversionError(
                f"{self.source}: corrupt checkpoint pickle: bad tensor offset/size "
                f"({shown(storage_offset)}, {shown(size)})",
                hint=_REDOWNLOAD,
            )
        if not _is_int_tuple(stride) or len(stride) != len(size):
            raise ConversionError(
                f"{self.source}: corrupt checkpoint pickle: bad tensor stride {shown(stride)}",
                hint=_REDOWNLOAD,
            )
        return TensorRef(storage, storage_offset, tuple(size), tuple(stride))


def _allow_list(source: str) -> dict[tuple[str, str], Any]:
    """The globals a pickle may name, as fresh objects for one load."""
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _Rebuild(source),
    }
    for name, dtype in STORAGE_DTYPES.items():
        allowed[("torch", name)] = StorageMarker(f"torch.{name}", dtype)
    return allowed


_MEMO_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"})
_INT_OPS = frozenset({"INT", "LONG", "LONG1", "LONG4"})
_REFUSED_OPS = {
    "NEXT_BUFFER": "out-of-band buffers",
    "READONLY_BUFFER": "out-of-band buffers",
    "EXT1": "the copyreg extension registry",
    "EXT2": "the copyreg extension registry",
    "EXT4": "the copyreg extension registry",
}


def check_pickle(data: bytes, where: str) -> None:
    """Refuse a pickle that could make the unpickler allocate more than its own size (module docstring).

    Reads the opcode stream only (``pickletools.genops``); nothing is built or looked up. ``where`` names
    the shard and member in messages.
    """
    if len(data) > MAX_PICKLE_BYTES:
        raise ConversionError(
            f"{where} is {len(data)} bytes (limit {MAX_PICKLE_BYTES})", hint="not a plain state dict"
        )
    hint = "not a plain state dict written by torch.save; re-download the shard"
    count = 0
    try:
        for opcode, arg, pos in pickletools.genops(data):
            count += 1
            name = opcode.name
            if count > MAX_PICKLE_OPS:
                raise ConversionError(f"{where}: more than {MAX_PICKLE_OPS} pickle opcodes", hint=hint)
            if name in _MEMO_OPS:
                if not isinstance(arg, int) or not 0 <= arg <= count:
                    raise ConversionError(
                        f"{where}: pickle memo index {shown(arg)} at byte {pos} is out of range "
                        f"(at most {count} here)",
                        hint=hint,
                    )
            elif name == "PROTO":
                if not isinstance(arg, int) or arg > MAX_PICKLE_PROTOCOL:
                    raise ConversionError(f"{where}: unsupported pickle protocol {shown(arg)}", hint=hint)
            elif name == "FRAME":
                if not isinstance(arg, int) or arg > len(data) - (pos or 0) - 9:
                    raise ConversionError(
                        f"{where}: pickle frame at byte {pos} is longer than the data", hint=hint
                    )
            elif name in _INT_OPS:
                if isinstance(arg, int) and arg.bit_length() > MAX_PICKLE_INT_BITS:
                    raise ConversionError(
                        f"{where}: integer of {arg.bit_length()} bits at byte {pos} "
                        f"(limit {MAX_PICKLE_INT_BITS})",
                        hint=hint,
                    )
            elif name in _REFUSED_OPS:
                raise ConversionError(
                    f"{where}: the pickle uses {_REFUSED_OPS[name]} (opcode {name})", hint=hint
                )
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001 - genops raises assorted errors on malformed bytes
        raise ConversionError(
            f"{where}: corrupt checkpoint pickle ({type(exc).__name__}: {shown(str(exc))})",
            hint=_REDOWNLOAD,
        ) from None


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the allow-listed globals, as fresh objects (see module docstring).

    Call :func:`check_pickle` on the bytes first (:func:`read_torch_zip` does)."""

    def __init__(self, data: bytes, *, source: str) -> None:
        super().__init__(io.BytesIO(data))
        self._source = source
        self._allowed = _allow_list(source)

    def find_class(self, module: str, name: str) -> Any:
        allowed = self._allowed.get((module, name))
        if allowed is not None:
            return allowed
        if module == "torch" and name.endswith("Storage"):
            raise ConversionError(
                f"{self._source}: unsupported tensor dtype torch.{shown(name)}",
                hint="only BF16, F16 and F32 checkpoints can be converted",
            )
        raise UnsafePickleError(
            f"{self._source}: refusing to load pickle global {shown(module)}.{shown(name)} "
            "(not a plain state dict)",
            hint="this file may be malicious; only load checkpoints from sources you trust, "
            "or use a safetensors copy",
        )

    def persistent_load(self, pid: Any) -> StorageRef:
        if (
            not isinstance(pid, tuple)
            or len(pid) != 5
            or pid[0] != "storage"
            or not isinstance(pid[1], StorageMarker)
            or not any(pid[1] is marker for marker in self._allowed.values())
            or not isinstance(pid[2], str)
            or not isinstance(pid[4], int)
            or isinstance(pid[4], bool)
            or not 0 <= pid[4] <= MAX_DIM
        ):
            raise ConversionError(
                f"{self._source}: corrupt checkpoint pickle (unexpected persistent id)",
                hint=_REDOWNLOAD,
            )
        return StorageRef(key=pid[2], dtype=pid[1].dtype, numel=pid[4])
