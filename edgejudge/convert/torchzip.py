"""PyTorch zip-pickle checkpoints (``pytorch_model*.bin``) without torch: the restricted unpickler and the
member layout of the zip archive.

Safety: the pickle is read by :class:`RestrictedUnpickler`, whose ``find_class`` is the only gate through
which a pickle can name Python objects (GLOBAL, STACK_GLOBAL, INST, OBJ and EXT opcodes all go through it).
It allows exactly ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the ``torch.*Storage``
classes of :data:`STORAGE_DTYPES`; none of them is imported: each is mapped to a local stand-in (a plain
OrderedDict, a function returning a :class:`TensorRef` descriptor, a dtype marker). Any other global raises
:class:`~edgejudge.errors.UnsafePickleError` naming it the moment the opcode is read, before a REDUCE
could call it. Persistent ids must be ``('storage', <storage marker>, key, location, numel)``.

Data: storages are ZIP_STORED members; their data offset is computed from the *local* file header, so the
caller can memory-map the file and view each tensor with ``np.frombuffer`` (never ``ZipFile.read``).

Writing (:func:`write_torch_zip`, for test fixtures) needs no torch either: fake ``torch`` modules are put in
``sys.modules`` just while a normal ``pickle.Pickler`` runs, so it emits torch's exact GLOBAL opcodes.
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgejudge.errors import ConversionError, UnsafePickleError

__all__ = [
    "STORAGE_DTYPES",
    "StorageMarker",
    "StorageRef",
    "TensorRef",
    "RestrictedUnpickler",
    "ZipMember",
    "TorchZipIndex",
    "read_torch_zip",
    "StoredTensor",
    "contiguous_strides",
    "torch_pickle",
    "write_torch_zip",
]

#: ``torch.<Name>Storage`` → edgejudge dtype code. Only these storage names are accepted; they are data
#: markers, never imported. Another ``torch.*Storage`` name is reported as an unsupported dtype.
STORAGE_DTYPES: dict[str, str] = {
    "BFloat16Storage": "BF16",
    "HalfStorage": "F16",
    "FloatStorage": "F32",
    "LongStorage": "I64",  # only for ``*position_ids`` buffers, which the reader skips
}

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes
_LOCAL_SIG = b"PK\x03\x04"
_MAX_PICKLE = 256 * 1024 * 1024  # a 13B state dict's pickle is well under 1 MB


@dataclass(frozen=True)
class StorageMarker:
    """Stand-in for a ``torch.XStorage`` class named by the pickle."""

    qualname: str
    dtype: str


@dataclass(frozen=True)
class StorageRef:
    """A storage named by a persistent id: ``data/<key>`` holding ``numel`` elements of ``dtype``."""

    key: str
    dtype: str
    numel: int


@dataclass(frozen=True)
class TensorRef:
    """What ``_rebuild_tensor_v2`` would have built: a view of a storage (offset/stride in elements)."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _is_int_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, int) and v >= 0 for v in value)


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> TensorRef:
    """Local stand-in for ``torch._utils._rebuild_tensor_v2``: validates the arguments, builds nothing."""
    if not isinstance(storage, StorageRef):
        raise ConversionError(
            "corrupt checkpoint pickle: a tensor is not backed by a storage",
            hint="re-download the shard; it was not written by torch.save",
        )
    if not isinstance(storage_offset, int) or storage_offset < 0 or not _is_int_tuple(size):
        raise ConversionError(
            "corrupt checkpoint pickle: bad tensor offset/size", hint="re-download the shard"
        )
    if not _is_int_tuple(stride) or len(stride) != len(size):
        raise ConversionError("corrupt checkpoint pickle: bad tensor stride", hint="re-download the shard")
    return TensorRef(storage, storage_offset, tuple(size), tuple(stride))


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
}
for _name, _dtype in STORAGE_DTYPES.items():
    _ALLOWED[("torch", _name)] = StorageMarker(f"torch.{_name}", _dtype)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the allow-listed globals (see module docstring)."""

    def __init__(self, data: bytes, *, source: str) -> None:
        super().__init__(io.BytesIO(data))
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is not None:
            return allowed
        if module == "torch" and name.endswith("Storage"):
            raise ConversionError(
                f"{self._source}: unsupported tensor dtype torch.{name}",
                hint="only BF16, F16 and F32 checkpoints can be converted",
            )
        raise UnsafePickleError(
            f"{self._source}: refusing to load pickle global {module}.{name} (not a plain state dict)",
            hint="this file may be malicious; only load checkpoints from sources you trust, "
            "or use a safetensors copy",
        )

    def persistent_load(self, pid: Any) -> StorageRef:
        if (
            not isinstance(pid, tuple)
            or len(pid) != 5
            or pid[0] != "storage"
            or not isinstance(pid[1], StorageMarker)
            or not isinstance(pid[2], str)
            or not isinstance(pid[4], int)
            or pid[4] < 0
        ):
            raise ConversionError(
                f"{self._source}: corrupt checkpoint pickle (unexpected persistent id)",
                hint="re-download the shard",
            )
        return StorageRef(key=pid[2], dtype=pid[1].dtype, numel=pid[4])


@dataclass(frozen=True)
class ZipMember:
    """A ZIP_STORED member: absolute byte offset of its data in the file and its size."""

    offset: int
    size: int


@dataclass(frozen=True)
class TorchZipIndex:
    """The parsed table of a torch zip-pickle: tensor name → TensorRef, storage key → member."""

    tensors: Mapping[str, TensorRef]
    storages: Mapping[str, ZipMember]


def _data_offset(raw: bytes | memoryview, header_offset: int, source: str) -> int:
    head = bytes(raw[header_offset : header_offset + _LOCAL_HEADER.size])
    if len(head) < _LOCAL_HEADER.size or head[:4] != _LOCAL_SIG:
        raise ConversionError(f"{source}: corrupt zip (bad local file header)", hint="re-download the shard")
    fields = _LOCAL_HEADER.unpack(head)
    name_len, extra_len = fields[9], fields[10]
    return header_offset + _LOCAL_HEADER.size + name_len + extra_len


def read_torch_zip(path: Path, raw: bytes | memoryview) -> TorchZipIndex:
    """Parse the zip directory and the restricted pickle of ``path`` (whose bytes are mapped as ``raw``).

    Validates: it is a zip with one ``<root>/data.pkl``; little-endian; the pickle is a flat mapping of
    names to tensors; every storage member exists, is stored uncompressed, lies inside the file, and is
    large enough for every view into it (else the shard is reported as truncated).
    """
    source = path.name
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        if bytes(raw[:4]) == _LOCAL_SIG:
            raise ConversionError(
                f"{source}: shard is truncated or corrupt (zip directory unreadable: {exc})",
                hint="re-download the shard",
            ) from None
        raise ConversionError(
            f"{source}: not a PyTorch zip checkpoint or corrupt/truncated ({exc})",
            hint="re-download the shard; legacy non-zip torch files must be re-saved with a recent torch",
        ) from None
    with zf:
        infos = {info.filename: info for info in zf.infolist()}
        pkl = [n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise ConversionError(f"{source}: no <root>/data.pkl in the zip", hint="not a torch.save file")
        root = pkl[0][: -len("data.pkl")]
        if infos[pkl[0]].file_size > _MAX_PICKLE:
            raise ConversionError(f"{source}: data.pkl is implausibly large", hint="not a plain state dict")
        order = infos.get(root + "byteorder")
        if order is not None and zf.read(order).strip() not in (b"little", b""):
            raise ConversionError(
                f"{source}: big-endian checkpoint", hint="re-save on a little-endian machine"
            )
        try:
            data = zf.read(pkl[0])  # the pickle itself is small; storages are never read this way
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ConversionError(
                f"{source}: corrupt data.pkl ({exc})", hint="re-download the shard"
            ) from None
    try:
        obj = RestrictedUnpickler(data, source=source).load()
    except ConversionError:
        raise
    except Exception as exc:  # malformed pickle bytes: any unpickling failure is a corrupt file
        raise ConversionError(
            f"{source}: corrupt checkpoint pickle ({type(exc).__name__}: {exc})", hint="re-download the shard"
        ) from None
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, TensorRef) for k, v in obj.items()
    ):
        raise ConversionError(
            f"{source}: the pickle is not a flat state dict of tensors",
            hint="save the model's state_dict(), not the model object",
        )
    storages: dict[str, ZipMember] = {}
    file_size = len(raw)
    for ref in obj.values():
        key = ref.storage.key
        if key in storages:
            continue
        info = infos.get(f"{root}data/{key}")
        if info is None:
            raise ConversionError(f"{source}: storage data/{key} is missing", hint="re-download the shard")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ConversionError(
                f"{source}: storage data/{key} is compressed", hint="re-save the checkpoint with torch.save"
            )
        if info.header_offset + _LOCAL_HEADER.size > file_size:
            raise ConversionError(f"{source}: shard is truncated", hint="re-download the shard")
        start = _data_offset(raw, info.header_offset, source)
        if start + info.file_size > file_size:
            raise ConversionError(
                f"{source}: shard is truncated (storage data/{key} ends past the end of the file)",
                hint="re-download the shard",
            )
        storages[key] = ZipMember(start, info.file_size)
    return TorchZipIndex(tensors=dict(obj), storages=storages)


# --------------------------------------------------------------------------------------------------------
# Writing (test fixtures only): torch.save-compatible zip-pickles without torch.


@dataclass(frozen=True)
class StoredTensor:
    """A tensor to write: a view of storage ``key`` (offset/stride in elements; stride None: contiguous)."""

    name: str
    key: str
    shape: tuple[int, ...]
    offset: int = 0
    stride: tuple[int, ...] | None = None


class _FakeTorch:
    """Temporarily installs fake ``torch`` / ``torch._utils`` modules so pickle emits torch's GLOBALs."""

    def __enter__(self) -> dict[str, Any]:
        import types

        torch_mod = types.ModuleType("torch")
        utils_mod = types.ModuleType("torch._utils")

        def _rebuild(*args: Any) -> Any:  # never called: only its name is pickled
            raise RuntimeError("fake torch")

        _rebuild.__module__, _rebuild.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
        utils_mod._rebuild_tensor_v2 = _rebuild  # type: ignore[attr-defined]
        torch_mod._utils = utils_mod  # type: ignore[attr-defined]
        classes: dict[str, Any] = {}
        for name, dtype in STORAGE_DTYPES.items():
            cls = type(name, (), {"__module__": "torch"})
            setattr(torch_mod, name, cls)
            classes[dtype] = cls
        self._saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
        sys.modules["torch"], sys.modules["torch._utils"] = torch_mod, utils_mod
        return {"rebuild": _rebuild, "storage": classes}

    def __exit__(self, *exc: object) -> None:
        for key, mod in self._saved.items():
            if mod is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = mod


class _StorageProxy:
    def __init__(self, key: str, dtype: str, numel: int) -> None:
        self.key, self.dtype, self.numel = key, dtype, numel


class _TensorProxy:
    def __init__(self, rebuild: Any, storage: _StorageProxy, tensor: StoredTensor) -> None:
        self.rebuild, self.storage, self.tensor = rebuild, storage, tensor

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        t = self.tensor
        stride = t.stride if t.stride is not None else contiguous_strides(t.shape)
        return (self.rebuild, (self.storage, t.offset, t.shape, stride, False, OrderedDict()))


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Element strides of a C-contiguous tensor of ``shape`` (what torch.save writes by default)."""
    out, acc = [], 1
    for dim in reversed(shape):
        out.append(acc)
        acc *= dim
    return tuple(reversed(out))


def torch_pickle(
    tensors: list[StoredTensor],
    storages: Mapping[str, tuple[str, int]],
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """``data.pkl`` bytes for a state dict (storages: key → (dtype code, numel)); ``extra`` entries are
    pickled as-is after the tensors (tests use it to plant malicious objects)."""

    with _FakeTorch() as fake:
        proxies = {k: _StorageProxy(k, dt, n) for k, (dt, n) in storages.items()}

        class _Pickler(pickle.Pickler):
            def persistent_id(self, obj: Any) -> Any:
                if isinstance(obj, _StorageProxy):
                    return ("storage", fake["storage"][obj.dtype], obj.key, "cpu", obj.numel)
                return None

        state: OrderedDict[str, Any] = OrderedDict(
            (t.name, _TensorProxy(fake["rebuild"], proxies[t.key], t)) for t in tensors
        )
        state.update(extra or {})
        buf = io.BytesIO()
        _Pickler(buf, protocol=2).dump(state)
        return buf.getvalue()


def _aligned_info(zf: zipfile.ZipFile, name: str, align: int = 64) -> zipfile.ZipInfo:
    """A ZIP_STORED ZipInfo whose data will start on an ``align`` boundary (padding extra field, as torch)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    start = zf.start_dir + _LOCAL_HEADER.size + len(name.encode()) + 4
    pad = (-start) % align
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # "FB" padding record, like torch
    return info


def write_torch_zip(
    path: Path,
    tensors: list[StoredTensor],
    storages: Mapping[str, tuple[str, int]],
    data: Any,
    *,
    pickle_bytes: bytes | None = None,
) -> None:
    """Write a torch.save-style zip. ``data(key) -> bytes`` yields each storage's raw bytes, one at a time
    (streaming: only one storage is in memory). ``pickle_bytes`` overrides the generated ``data.pkl``."""
    root = path.stem
    pkl = pickle_bytes if pickle_bytes is not None else torch_pickle(tensors, storages)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr(_aligned_info(zf, f"{root}/data.pkl"), pkl)
        zf.writestr(_aligned_info(zf, f"{root}/byteorder"), b"little")
        for key in storages:
            raw = data(key)
            zf.writestr(_aligned_info(zf, f"{root}/data/{key}"), raw)
            del raw
        zf.writestr(_aligned_info(zf, f"{root}/version"), b"3\n")
