"""PyTorch zip-pickle checkpoints (``pytorch_model*.bin``) without torch: the member layout of the zip
archive, and (for fixtures) writing one.

Reading (:func:`read_torch_zip`): the archive must hold one ``<root>/data.pkl``, little-endian; the pickle
is checked and loaded by :mod:`edgejudge.convert.torchpickle` (the opcode pre-check and the restricted
unpickler: the safety and memory rules live there). Zip members other than storages are read with a limit
on both the declared and the actual uncompressed size; the central directory is bounded before
``zipfile`` reads it; encrypted members and compression other than stored/deflate are refused.

Data: storages are ZIP_STORED members; their data offset is computed from the *local* file header, so the
caller can memory-map the file and view each tensor with ``np.frombuffer`` (never ``ZipFile.read``).

Writing (:func:`write_torch_zip`, for the tiny fixture) needs no torch either: fake ``torch`` modules are
put in ``sys.modules`` just while a normal ``pickle.Pickler`` runs, so it emits torch's exact GLOBAL
opcodes. It writes tensors only (hostile pickles are the tests' own, in ``tests/helpers``).
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

from ..errors import ConversionError
from .limits import MAX_PICKLE_BYTES, MAX_SMALL_MEMBER, MAX_ZIP_DIRECTORY, MAX_ZIP_MEMBERS, shown
from .torchpickle import STORAGE_DTYPES, MutationRefused, RestrictedUnpickler, TensorRef, check_pickle

__all__ = [
    "ZipMember",
    "TorchZipIndex",
    "read_torch_zip",
    "StoredTensor",
    "contiguous_strides",
    "torch_pickle",
    "write_torch_zip",
]

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes
_LOCAL_SIG = b"PK\x03\x04"
_REDOWNLOAD = "re-download the shard"
_READ_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # small members; storages: stored only
#: what zipfile raises on a damaged or unusual archive (bad headers, unsupported zip versions, compression
#: methods or encryption, undecodable member names, I/O errors).
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    ValueError,  # includes UnicodeDecodeError in member names
    NotImplementedError,
    RuntimeError,  # "File ... is encrypted, password required"
    struct.error,
    OverflowError,
    IndexError,
    KeyError,
)


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
    if header_offset < 0:
        raise ConversionError(f"{source}: corrupt zip (bad local file header offset)", hint=_REDOWNLOAD)
    head = bytes(raw[header_offset : header_offset + _LOCAL_HEADER.size])
    if len(head) < _LOCAL_HEADER.size or head[:4] != _LOCAL_SIG:
        raise ConversionError(f"{source}: corrupt zip (bad local file header)", hint=_REDOWNLOAD)
    fields = _LOCAL_HEADER.unpack(head)
    name_len, extra_len = fields[9], fields[10]
    return header_offset + _LOCAL_HEADER.size + name_len + extra_len


def _check_directory(path: Path, source: str) -> None:
    """Bound the central directory (its size and member count) before ``zipfile`` reads it whole."""
    end_record = getattr(zipfile, "_EndRecData", None)
    if end_record is None:  # a Python without it: zipfile's own checks still apply
        return
    try:
        with open(path, "rb") as fh:
            rec = end_record(fh)
    except _ZIP_ERRORS:
        return  # zipfile.ZipFile reports it
    if rec is None:
        return
    size, entries = rec[zipfile._ECD_SIZE], rec[zipfile._ECD_ENTRIES_TOTAL]  # type: ignore[attr-defined]
    if size > MAX_ZIP_DIRECTORY or entries > MAX_ZIP_MEMBERS:
        raise ConversionError(
            f"{source}: zip directory of {entries} members / {size} bytes "
            f"(limits {MAX_ZIP_MEMBERS} / {MAX_ZIP_DIRECTORY})",
            hint="not a torch.save checkpoint",
        )


def _read_small(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, source: str) -> bytes:
    """A non-storage member's bytes, at most ``limit`` (declared and actual size), never more in memory."""
    label = f"{source}: member {shown(info.filename)}"
    if info.flag_bits & 0x1:
        raise ConversionError(f"{label} is encrypted", hint="torch.save never encrypts; re-download")
    if info.compress_type not in _READ_COMPRESSIONS:
        raise ConversionError(
            f"{label} uses unsupported compression method {info.compress_type}",
            hint="torch.save stores members uncompressed; re-save the checkpoint",
        )
    if info.file_size > limit:
        raise ConversionError(
            f"{label} is {info.file_size} bytes uncompressed (limit {limit})", hint="not a torch.save file"
        )
    try:
        with zf.open(info) as fh:
            data = fh.read(limit + 1)
    except _ZIP_ERRORS as exc:
        raise ConversionError(
            f"{label} is corrupt ({type(exc).__name__}: {shown(str(exc))})", hint=_REDOWNLOAD
        ) from None
    if len(data) > limit:
        raise ConversionError(f"{label} is over {limit} bytes uncompressed", hint="not a torch.save file")
    return data


def read_torch_zip(path: Path, raw: bytes | memoryview) -> TorchZipIndex:
    """Parse the zip directory and the restricted pickle of ``path`` (whose bytes are mapped as ``raw``).

    Validates: it is a zip with one ``<root>/data.pkl``; little-endian; the pickle is a flat mapping of
    names to tensors; every storage member exists, is stored uncompressed, lies inside the file, and is
    large enough for every view into it (else the shard is reported as truncated). Every problem is a
    ConversionError naming the shard (and the member).
    """
    source = path.name
    _check_directory(path, source)
    try:
        zf = zipfile.ZipFile(path)
    except _ZIP_ERRORS as exc:
        reason = f"{type(exc).__name__}: {shown(str(exc))}"
        if isinstance(exc, NotImplementedError):  # a zip version, spanning or method zipfile cannot read
            raise ConversionError(
                f"{source}: uses a zip feature that cannot be read ({reason})",
                hint="torch.save writes plain zip files; re-save or re-download the shard",
            ) from None
        if bytes(raw[:4]) == _LOCAL_SIG:
            raise ConversionError(
                f"{source}: shard is truncated or corrupt (zip directory unreadable: {reason})",
                hint=_REDOWNLOAD,
            ) from None
        raise ConversionError(
            f"{source}: not a PyTorch zip checkpoint or corrupt/truncated ({reason})",
            hint="re-download the shard; legacy non-zip torch files must be re-saved with a recent torch",
        ) from None
    with zf:
        try:
            infos = {info.filename: info for info in zf.infolist()}
        except _ZIP_ERRORS as exc:  # pragma: no cover - infolist is a list copy
            raise ConversionError(f"{source}: corrupt zip ({exc})", hint=_REDOWNLOAD) from None
        if len(infos) > MAX_ZIP_MEMBERS:
            raise ConversionError(f"{source}: more than {MAX_ZIP_MEMBERS} zip members", hint=_REDOWNLOAD)
        pkl = [n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise ConversionError(f"{source}: no <root>/data.pkl in the zip", hint="not a torch.save file")
        root = pkl[0][: -len("data.pkl")]
        order = infos.get(root + "byteorder")
        if order is not None and _read_small(zf, order, MAX_SMALL_MEMBER, source).strip() not in (
            b"little",
            b"",
        ):
            raise ConversionError(
                f"{source}: big-endian checkpoint", hint="re-save on a little-endian machine"
            )
        # the pickle itself is small; storages are never read this way
        data = _read_small(zf, infos[pkl[0]], MAX_PICKLE_BYTES, source)
    where = f"{source}: member {shown(pkl[0])}"
    check_pickle(data, where)
    try:
        obj = RestrictedUnpickler(data, source=source).load()
    except ConversionError:
        raise
    except MutationRefused as exc:
        raise ConversionError(
            f"{where}: the pickle tries to modify a {exc} (BUILD on an allow-listed object)",
            hint="this file may be malicious; only load checkpoints from sources you trust",
        ) from None
    except Exception as exc:  # noqa: BLE001 - malformed pickle bytes: any unpickling failure is a corrupt file
        raise ConversionError(
            f"{where}: corrupt checkpoint pickle ({type(exc).__name__}: {shown(str(exc))})",
            hint=_REDOWNLOAD,
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
        label = f"{source}: storage data/{shown(key)}"
        info = infos.get(f"{root}data/{key}")
        if info is None:
            raise ConversionError(f"{label} is missing", hint=_REDOWNLOAD)
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            raise ConversionError(
                f"{label} is compressed or encrypted", hint="re-save the checkpoint with torch.save"
            )
        if info.header_offset < 0 or info.header_offset + _LOCAL_HEADER.size > file_size:
            raise ConversionError(f"{source}: shard is truncated", hint=_REDOWNLOAD)
        start = _data_offset(raw, info.header_offset, source)
        if start + info.file_size > file_size:
            raise ConversionError(
                f"{source}: shard is truncated (storage data/{shown(key)} ends past the end of the file)",
                hint=_REDOWNLOAD,
            )
        storages[key] = ZipMember(start, info.file_size)
    return TorchZipIndex(tensors=dict(obj), storages=storages)


# --------------------------------------------------------------------------------------------------------
# Writing (the tiny fixture): torch.save-compatible zip-pickles of plain state dicts, without torch.


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


def torch_pickle(tensors: list[StoredTensor], storages: Mapping[str, tuple[str, int]]) -> bytes:
    """``data.pkl`` bytes for a state dict of ``tensors`` (storages: key → (dtype code, numel))."""

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
) -> None:
    """Write a torch.save-style zip. ``data(key) -> bytes`` yields each storage's raw bytes, one at a time
    (streaming: only one storage is in memory)."""
    root = path.stem
    pkl = torch_pickle(tensors, storages)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr(_aligned_info(zf, f"{root}/data.pkl"), pkl)
        zf.writestr(_aligned_info(zf, f"{root}/byteorder"), b"little")
        for key in storages:
            raw = data(key)
            zf.writestr(_aligned_info(zf, f"{root}/data/{key}"), raw)
            del raw
        zf.writestr(_aligned_info(zf, f"{root}/version"), b"3\n")
