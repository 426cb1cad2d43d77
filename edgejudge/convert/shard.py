"""One checkpoint shard file, memory-mapped: its table of tensors (safetensors header or PyTorch zip-pickle)
and read-only views of their data.

:class:`Shard` opens a regular file, maps it read-only, parses and validates its table up front (every
tensor lies inside the file, dtypes are known, int64 ``*position_ids`` buffers are skipped) and raises
:class:`~edgejudge.errors.ConversionError` (one line + hint). :meth:`Shard.view` views one tensor with
``np.frombuffer`` (``as_strided`` for non-contiguous torch views); :meth:`Shard.release` drops its pages.
Pickles go through :func:`edgejudge.convert.torchzip.read_torch_zip` (restricted unpickler). How shards
make a checkpoint (index files, discovery) is :mod:`edgejudge.convert.readers`'s.
"""

from __future__ import annotations

import math
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._fs import open_regular
from .._jsonl import loads_line
from ..errors import ConversionError
from .limits import MAX_ST_HEADER, check_shape, shown
from .torchzip import contiguous_strides, read_torch_zip

__all__ = ["DTYPES", "TensorInfo", "Entry", "Shard", "bf16_to_f32"]

#: dtype code → numpy storage dtype (BF16 is stored as its uint16 bit pattern).
DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
}
#: integer dtypes (itemsize) accepted only for ``*position_ids`` buffers (hub CLIP weights keep an int64
#: ``embeddings.position_ids``): validated, never listed or converted. Other integer tensors are refused.
_SKIPPED_INT_DTYPES = {"I64": 8}

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
class Entry:
    shape: tuple[int, ...]
    dtype: str
    offset: int  # absolute byte offset of element 0 of the view
    strides: tuple[int, ...] | None  # element strides for non-contiguous torch views, else None


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """Widen BF16 bit patterns (uint16) to float32 exactly: zero-extend and shift left by 16."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


class Shard:
    """One memory-mapped shard file and its table of tensors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, Entry] = {}
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
                self.entries[tname] = Entry(shape, dtype, base + begin, None)
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
            self.entries[tname] = Entry(
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

    def _extent(self, entry: Entry) -> int:
        """Bytes from the view's first element to one past its last."""
        item = DTYPES[entry.dtype].itemsize
        if entry.strides is None:
            return math.prod(entry.shape) * item
        return (sum((d - 1) * s for d, s in zip(entry.shape, entry.strides, strict=True)) + 1) * item

    def release(self, entry: Entry) -> None:
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

    def view(self, entry: Entry) -> np.ndarray:
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
