"""Torch-free, memory-mapped checkpoint readers: safetensors and PyTorch zip-pickle shards.

:func:`open_checkpoint` opens a Hugging Face checkpoint directory (``config.json`` plus
``model.safetensors.index.json`` / ``pytorch_model.bin.index.json`` or a single unsharded file);
:func:`open_tensor_dir` does the same for a standalone vision-tower directory. Both validate everything up
front — shards exist, every index entry is in its shard, every tensor lies inside its file (truncated
shards), dtypes are known (int64 ``*position_ids`` buffers are skipped) — and raise
:class:`~edgejudge.errors.ConversionError` (one line + hint).

Tensors are never read whole into memory by the reader: each shard is ``mmap``-ed and
:meth:`Checkpoint.load` views a tensor with ``np.frombuffer`` (``as_strided`` for non-contiguous torch
views) and returns one float32 copy (BF16 is widened bit-wise). Pickles go through the restricted
unpickler of :mod:`edgejudge.convert.torchzip`.
"""

from __future__ import annotations

import math
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from .._fs import open_regular, user_path
from .._jsonl import loads_line
from ..errors import ConversionError
from .limits import MAX_ST_HEADER, check_shape, read_json_file, shown
from .torchzip import contiguous_strides, read_torch_zip

__all__ = ["TensorInfo", "Checkpoint", "open_checkpoint", "open_tensor_dir", "bf16_to_f32", "DTYPES"]

#: dtype code → numpy storage dtype (BF16 is stored as its uint16 bit pattern).
DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
}
#: integer dtypes (itemsize) accepted only for ``*position_ids`` buffers (hub CLIP weights keep an int64
#: ``embeddings.position_ids``): validated, never listed or converted. Other integer tensors are refused.
_SKIPPED_INT_DTYPES = {"I64": 8}

_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
_REDOWNLOAD = "re-download the shard"
_MADV_DONTNEED: int | None = getattr(mmap, "MADV_DONTNEED", None)  # Linux/macOS; absent on Windows


@dataclass(frozen=True)
class TensorInfo:
    """A tensor's description, read without touching its data."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # "F32" | "F16" | "BF16"
    nbytes: int
    shard: str  # file name of the shard holding it


@dataclass(frozen=True)
class _Entry:
    shape: tuple[int, ...]
    dtype: str
    offset: int  # absolute byte offset of element 0 of the view
    strides: tuple[int, ...] | None  # element strides for non-contiguous torch views, else None


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """Widen BF16 bit patterns (uint16) to float32 exactly: zero-extend and shift left by 16."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


class _Shard:
    """One memory-mapped shard file and its table of tensors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, _Entry] = {}
        self.skipped: set[str] = set()  # integer ``*position_ids`` buffers (validated, never converted)
        fd, info = open_regular(path, label=path.name, what="shard", max_bytes=None, error=ConversionError)
        try:
            self.mm: mmap.mmap | None = mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if info.st_size else None
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConversionError(f"cannot read shard {path.name}: {reason}", hint="check the file") from None
        finally:
            os.close(fd)
        if self.mm is None:
            raise ConversionError(f"shard {path.name} is empty", hint="re-download the shard")
        try:
            if path.suffix == ".safetensors":
                self._parse_safetensors()
            else:
                self._parse_torch()
        except BaseException:
            self.close()
            raise

    def _parse_safetensors(self) -> None:
        mm, name = self.mm, self.path.name
        assert mm is not None
        size = len(mm)
        if size < 8:
            raise ConversionError(f"{name}: shard is truncated (no header)", hint=_REDOWNLOAD)
        hlen = int.from_bytes(mm[:8], "little")
        if hlen > MAX_ST_HEADER:
            raise ConversionError(
                f"{name}: corrupt safetensors header (declares {hlen} bytes, limit {MAX_ST_HEADER})",
                hint=_REDOWNLOAD,
            )
        if 8 + hlen > size:
            raise ConversionError(
                f"{name}: corrupt or truncated safetensors header ({hlen} bytes declared, "
                f"{size - 8} in the file)",
                hint=_REDOWNLOAD,
            )
        try:
            text = bytes(mm[8 : 8 + hlen]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConversionError(
                f"{name}: corrupt safetensors header (not UTF-8 at byte {8 + exc.start})", hint=_REDOWNLOAD
            ) from None
        parsed = loads_line(text)
        if parsed.problem is not None:
            raise ConversionError(
                f"{name}: corrupt safetensors header (not JSON: {parsed.problem})", hint=_REDOWNLOAD
            )
        header = parsed.value
        if not isinstance(header, dict):
            raise ConversionError(f"{name}: corrupt safetensors header (not a JSON object)", hint=_REDOWNLOAD)
        meta = header.get("__metadata__")
        if meta is not None and not (
            isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())
        ):
            raise ConversionError(
                f"{name}: corrupt safetensors header (__metadata__ is not a map of strings to strings)",
                hint=_REDOWNLOAD,
            )
        base = 8 + hlen
        spans: list[tuple[int, int, str]] = []
        for tname, entry in header.items():
            if tname == "__metadata__":
                continue
            begin, end, shape, dtype = self._st_entry(tname, entry, size - base)
            item = self._itemsize(tname, dtype)
            if end - begin != math.prod(shape) * item:
                raise ConversionError(
                    f"{name}: size of {shown(tname)} does not match its shape "
                    f"({end - begin} bytes for {shown(shape)} {dtype})",
                    hint=_REDOWNLOAD,
                )
            if end > begin:
                spans.append((begin, end, tname))
            if dtype in DTYPES:
                self.entries[tname] = _Entry(shape, dtype, base + begin, None)
            else:
                self.skipped.add(tname)
        spans.sort()
        for (_, prev_end, prev), (begin, _, tname) in zip(spans, spans[1:], strict=False):
            if begin < prev_end:
                raise ConversionError(
                    f"{name}: tensors {shown(prev)} and {shown(tname)} overlap in the file", hint=_REDOWNLOAD
                )

    def _st_entry(self, tname: str, entry: Any, data_size: int) -> tuple[int, int, tuple[int, ...], str]:
        """(begin, end, shape, dtype) of one safetensors header entry, every field checked."""
        where = f"{self.path.name}: tensor {shown(tname)}"
        if not isinstance(entry, dict):
            raise ConversionError(f"{where}: header entry is not an object", hint=_REDOWNLOAD)
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str):
            raise ConversionError(f"{where}: dtype {shown(dtype)} is not a string", hint=_REDOWNLOAD)
        checked = check_shape(shape, where)
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in offsets)
        ):
            raise ConversionError(
                f"{where}: data_offsets {shown(offsets)} is not a pair of integers", hint=_REDOWNLOAD
            )
        begin, end = offsets
        if not 0 <= begin <= end:
            raise ConversionError(
                f"{where}: data_offsets [{begin}, {end}] are negative or reversed", hint=_REDOWNLOAD
            )
        if end > data_size:
            raise ConversionError(
                f"{self.path.name}: shard is truncated ({shown(tname)} ends past the end of the file)",
                hint=_REDOWNLOAD,
            )
        return begin, end, checked, dtype

    def _parse_torch(self) -> None:
        assert self.mm is not None
        index = read_torch_zip(self.path, memoryview(self.mm))
        name = self.path.name
        for tname, ref in index.tensors.items():
            member = index.storages[ref.storage.key]
            item = self._itemsize(tname, ref.storage.dtype)
            check_shape(ref.shape, f"{name}: tensor {shown(tname)}")
            if ref.storage.numel * item > member.size:
                raise ConversionError(
                    f"{name}: shard is truncated (storage of {shown(tname)} is shorter than declared)",
                    hint="re-download the shard",
                )
            numel = math.prod(ref.shape)
            extent = (
                ref.offset + sum((d - 1) * s for d, s in zip(ref.shape, ref.stride, strict=True)) + 1
                if numel
                else 0
            )
            if extent > ref.storage.numel:
                raise ConversionError(
                    f"{name}: tensor {shown(tname)} reaches past the end of its storage",
                    hint="re-download the shard",
                )
            if ref.storage.dtype not in DTYPES:
                self.skipped.add(tname)
                continue
            if numel > ref.storage.numel:
                raise ConversionError(
                    f"{name}: tensor {shown(tname)} views {numel} elements of a storage of "
                    f"{ref.storage.numel} (a broadcast view, not a saved weight)",
                    hint="save contiguous tensors (tensor.contiguous()) in the state dict",
                )
            contiguous = ref.stride == contiguous_strides(ref.shape) or numel <= 1
            self.entries[tname] = _Entry(
                ref.shape,
                ref.storage.dtype,
                member.offset + ref.offset * item if numel else member.offset,  # empty: offset unused
                None if contiguous else ref.stride,
            )

    def _itemsize(self, tname: str, dtype: str) -> int:
        """Element size of a tensor's dtype; an unknown dtype (or an integer tensor that is not a
        ``*position_ids`` buffer) raises ConversionError."""
        if dtype in DTYPES:
            return DTYPES[dtype].itemsize
        if dtype in _SKIPPED_INT_DTYPES and tname.endswith("position_ids"):
            return _SKIPPED_INT_DTYPES[dtype]
        raise ConversionError(
            f"{self.path.name}: tensor {shown(tname)} has unsupported dtype {shown(dtype)}",
            hint="only F32, F16 and BF16 checkpoints can be converted",
        )

    def _extent(self, entry: _Entry) -> int:
        """Bytes from the view's first element to one past its last."""
        item = DTYPES[entry.dtype].itemsize
        if entry.strides is None:
            return math.prod(entry.shape) * item
        return (sum((d - 1) * s for d, s in zip(entry.shape, entry.strides, strict=True)) + 1) * item

    def release(self, entry: _Entry) -> None:
        """Drop the tensor's pages from this process's resident set (they stay in the page cache), so
        streaming through a checkpoint does not grow RSS to the checkpoint's size."""
        if self.mm is None or _MADV_DONTNEED is None:
            return
        start = entry.offset - entry.offset % mmap.PAGESIZE
        length = entry.offset + self._extent(entry) - start
        if length > 0:
            try:
                self.mm.madvise(_MADV_DONTNEED, start, min(length, len(self.mm) - start))
            except (OSError, ValueError):
                pass  # advisory only

    def view(self, entry: _Entry) -> np.ndarray:
        if self.mm is None:
            raise ValueError(f"{self.path.name}: the checkpoint is closed")
        dt = DTYPES[entry.dtype]
        numel = math.prod(entry.shape)
        if entry.strides is None:
            return np.frombuffer(self.mm, dtype=dt, count=numel, offset=entry.offset).reshape(entry.shape)
        extent = sum((d - 1) * s for d, s in zip(entry.shape, entry.strides, strict=True)) + 1
        flat = np.frombuffer(self.mm, dtype=dt, count=extent, offset=entry.offset)
        byte_strides = tuple(s * dt.itemsize for s in entry.strides)
        return np.lib.stride_tricks.as_strided(flat, entry.shape, byte_strides, writeable=False)

    def close(self) -> None:
        if self.mm is not None:
            try:
                self.mm.close()
            except BufferError:  # a caller still holds a raw view; the map closes when it is released
                pass
            self.mm = None


class Checkpoint:
    """An open checkpoint: tensor names in index order, their infos, and float32 loads from memory maps.

    Use as a context manager (or call :meth:`close`) to unmap the shards.
    """

    def __init__(
        self, directory: Path, config: dict[str, Any], weight_map: dict[str, str], shards: dict[str, _Shard]
    ):
        self.directory = directory
        self.config = config
        self._weight_map = weight_map
        self._shards = shards

    def names(self) -> list[str]:
        return list(self._weight_map)

    def __contains__(self, name: object) -> bool:
        return name in self._weight_map

    def __len__(self) -> int:
        return len(self._weight_map)

    def _entry(self, name: str) -> tuple[_Shard, _Entry]:
        try:
            shard = self._shards[self._weight_map[name]]
        except KeyError:
            raise KeyError(name) from None
        return shard, shard.entries[name]

    def info(self, name: str) -> TensorInfo:
        shard, entry = self._entry(name)
        nbytes = math.prod(entry.shape) * DTYPES[entry.dtype].itemsize
        return TensorInfo(name, entry.shape, entry.dtype, nbytes, shard.path.name)

    def load_raw(self, name: str) -> np.ndarray:
        """A read-only view of the stored data (uint16 bits for BF16); valid until :meth:`close`."""
        shard, entry = self._entry(name)
        return shard.view(entry)

    def load(self, name: str) -> np.ndarray:
        """The tensor as a new C-contiguous float32 array (BF16 widened bit-wise, F16 exactly)."""
        shard, entry = self._entry(name)
        raw = shard.view(entry)
        if entry.dtype == "BF16":
            out = bf16_to_f32(raw)
        else:
            out = np.array(raw, dtype=np.float32, order="C", copy=True)
        del raw
        shard.release(entry)
        return np.ascontiguousarray(out)

    def close(self) -> None:
        for shard in self._shards.values():
            shard.close()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.directory)!r}, {len(self)} tensors, {len(self._shards)} shards)"


def _read_json(path: Path, what: str) -> Any:
    return read_json_file(path, what, hint=f"repair or re-download {what}")


def _is_file(path: Path) -> bool:
    """``path.is_file()``, with an unusable name (too long, NUL byte) simply not a file."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _discover(directory: Path) -> tuple[dict[str, str] | None, list[str]]:
    """(weight_map from an index, or None) and the shard file names to open, in order."""
    for index_name in _INDEX_FILES:
        index_path = directory / index_name
        if _is_file(index_path):
            data = _read_json(index_path, "the index")
            wmap = data.get("weight_map") if isinstance(data, dict) else None
            if not isinstance(wmap, dict) or not all(isinstance(v, str) for v in wmap.values()):
                raise ConversionError(f"{index_name} has no weight_map", hint="re-download the index file")
            shards = list(dict.fromkeys(wmap.values()))
            for shard in shards:
                if "/" in shard or "\\" in shard or shard.startswith(".") or "\x00" in shard:
                    raise ConversionError(
                        f"{index_name} names a shard outside the directory: {shown(shard)}", hint="fix it"
                    )
                if not shard or not _is_file(directory / shard):
                    raise ConversionError(
                        f"missing shard {shown(shard)} (listed in {index_name})",
                        hint=f"download every file of the checkpoint into {directory}",
                    )
            return dict(wmap), shards
    for single in _SINGLE_FILES:
        if _is_file(directory / single):
            return None, [single]
    for pattern in ("model*.safetensors", "pytorch_model*.bin"):
        found = sorted(p.name for p in directory.glob(pattern) if _is_file(p))
        if found:
            return None, found
    raise ConversionError(
        f"no weights in {directory} (no *.safetensors / pytorch_model*.bin / index file)",
        hint="point at a Hugging Face checkpoint directory with its weight files",
    )


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _open(directory: str | Path, *, need_config: bool) -> Checkpoint:
    path = user_path(directory, what="checkpoint directory", error=ConversionError)
    if not _is_dir(path):
        raise ConversionError(f"checkpoint directory not found: {path}", hint="check the path")
    config_path = path / "config.json"
    if _is_file(config_path):
        config = _read_json(config_path, "config.json")
        if not isinstance(config, dict):
            raise ConversionError("config.json is not a JSON object", hint="re-download config.json")
    elif need_config:
        raise ConversionError(f"no config.json in {path}", hint="download the checkpoint's config.json too")
    else:
        config = {}
    wmap, shard_names = _discover(path)
    shards: dict[str, _Shard] = {}
    try:
        for shard_name in shard_names:
            shards[shard_name] = _Shard(path / shard_name)
        if wmap is None:
            wmap = {}
            for shard_name in shard_names:
                for tname in shards[shard_name].entries:
                    wmap.setdefault(tname, shard_name)
        else:
            for tname, shard_name in wmap.items():
                if tname not in shards[shard_name].entries and tname not in shards[shard_name].skipped:
                    raise ConversionError(
                        f"tensor {shown(tname)} is listed in the index but missing from shard "
                        f"{shown(shard_name)}",
                        hint="the shard and the index do not belong together; re-download both",
                    )
            wmap = {t: f for t, f in wmap.items() if t not in shards[f].skipped}
    except BaseException:
        for shard in shards.values():
            shard.close()
        raise
    return Checkpoint(path, config, wmap, shards)


def open_checkpoint(directory: str | Path) -> Checkpoint:
    """Open and validate a checkpoint directory (``config.json`` required). See the module docstring."""
    return _open(directory, need_config=True)


def open_tensor_dir(directory: str | Path) -> Checkpoint:
    """Like :func:`open_checkpoint` for a standalone tower directory; ``config.json`` optional (``{}``)."""
    return _open(directory, need_config=False)
