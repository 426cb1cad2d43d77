"""Streaming GGUF tensor writing shared by the text-model and mmproj writers.

A ``TensorJob`` says where an output tensor comes from (an open Checkpoint and a name), its GGUF name,
shape, output dtype (float16 matrices, float32 vectors) and an optional row order (Q/K permutation, rotated
position table). ``write_streaming`` registers every tensor info first, writes header, key/values and
tensor infos, then converts and writes each tensor's data one at a time, in cache-sized row chunks (BF16
widened bit-wise; float32→float16 with ggml's SIMD routine when loadable, :mod:`edgejudge.native.f16`,
else numpy), checking for inf/NaN, and drops each tensor's memory-mapped pages afterwards: peak memory
stays near one tensor.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConversionError
from ..native.f16 import f32_to_f16_kernel
from .limits import shown

__all__ = ["TensorJob", "check_tensor_shape", "write_streaming"]

_CHUNK_ELEMENTS = 1 << 20  # elements converted per step: 4 MiB of float32, cache-friendly


@dataclass(frozen=True)
class TensorJob:
    """One output tensor: where it comes from and how it is converted.

    ``rows`` re-orders the first axis (Q/K permutation, rotated position table); ``dtype`` is float16 or
    float32. ``source`` is an open Checkpoint.
    """

    out_name: str
    src_name: str
    source: Any
    shape: tuple[int, ...]
    dtype: np.dtype
    rows: tuple[int, ...] | None = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def src_nbytes(self) -> int:
        return int(self.source.info(self.src_name).nbytes)


def check_tensor_shape(name: str, got: tuple[int, ...], want: tuple[int, ...]) -> None:
    """A tensor's shape must be what the config implies (``want``), else ConversionError naming it."""
    if tuple(got) != tuple(want):
        raise ConversionError(
            f"tensor {shown(name)} has shape {tuple(got)}, but the config implies {tuple(want)}",
            hint="the config.json and the weights belong to different models, or a shard is corrupt",
        )


def _require(jobs: Sequence[TensorJob]) -> None:
    for job in jobs:
        if job.src_name not in job.source:
            raise ConversionError(
                f"the checkpoint has no tensor {job.src_name}", hint="the checkpoint is incomplete"
            )


def _f32_to_f16(src: np.ndarray, dst: np.ndarray) -> None:
    """Round contiguous float32 ``src`` to float16 into contiguous ``dst`` (IEEE round-to-nearest-even)."""
    fast = f32_to_f16_kernel()
    ok = src.dtype == np.float32 and dst.dtype == np.float16 and src.size == dst.size
    if fast is not None and ok and src.flags.c_contiguous and dst.flags.c_contiguous:
        fast(src.ctypes.data, dst.ctypes.data, src.size)
    else:
        dst[...] = src


def _convert(job: TensorJob) -> np.ndarray:
    """The output array of ``job``: rows re-ordered, cast in cache-sized chunks, checked to be finite.

    BF16 is widened bit-wise into a reused float32 buffer (one pass), then cast on assignment (one pass);
    F16/F32 sources are cast directly. Values beyond float16's range become inf and are caught below.
    """
    raw = job.source.load_raw(job.src_name)
    is_bf16 = job.source.info(job.src_name).dtype == "BF16"
    out = np.empty(job.shape, dtype=job.dtype)
    flat_out = out.reshape(job.shape[0], -1) if out.ndim > 1 else out.reshape(1, -1)
    flat_raw = raw.reshape(job.shape[0], -1) if raw.ndim > 1 else raw.reshape(1, -1)
    order = np.asarray(job.rows) if job.rows is not None else None
    n_rows, width = flat_raw.shape
    step = max(1, _CHUNK_ELEMENTS // max(1, width))
    buffer = np.empty((min(step, n_rows), width), dtype=np.uint32) if is_bf16 else None
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        part = flat_raw[order[start:stop]] if order is not None else flat_raw[start:stop]
        target = flat_out[start:stop]
        if buffer is not None:
            wide = buffer[: stop - start]
            np.left_shift(part, 16, out=wide, dtype=np.uint32)
            part = wide.view(np.float32)
        if target.dtype == np.float16 and part.dtype == np.float32:
            _f32_to_f16(np.ascontiguousarray(part), target)
        else:
            target[...] = part
        bits = target.view(np.uint16 if target.dtype == np.float16 else np.uint32)
        exponent = np.uint16(0x7C00) if target.dtype == np.float16 else np.uint32(0x7F800000)
        if ((bits & exponent) == exponent).any():  # inf or NaN (much faster than isfinite on float16)
            raise ConversionError(
                f"tensor {job.src_name} has NaN/infinity or values beyond the float16 range (|x| > 65504)",
                hint="this checkpoint cannot be stored as F16 (or it is corrupt)",
            )
        if order is None:
            _release_pages(flat_raw[start:stop])  # done with these source pages
    del flat_raw
    _release_pages(raw)
    del raw
    return out


def _release_pages(view: np.ndarray) -> None:
    """Drop a memory-mapped view's pages from this process (they stay in the page cache), so that peak
    resident memory follows the tensor being converted instead of growing to the whole checkpoint."""
    owner: Any = view
    for _ in range(8):
        if isinstance(owner, mmap.mmap) or owner is None:
            break
        owner = owner.obj if isinstance(owner, memoryview) else getattr(owner, "base", None)
    if not isinstance(owner, mmap.mmap) or owner.closed or view.size == 0:
        return
    base = np.frombuffer(owner, dtype=np.uint8, count=1).ctypes.data
    start = view.ctypes.data - base
    span = sum((d - 1) * abs(s) for d, s in zip(view.shape, view.strides, strict=True)) + view.itemsize
    lo = max(0, start // mmap.PAGESIZE * mmap.PAGESIZE)
    hi = min(len(owner), start + span)
    if hi > lo:
        owner.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def write_streaming(
    writer: Any, jobs: Sequence[TensorJob], on_tensor: Callable[[TensorJob], None] | None = None
) -> None:
    """Write header, key/values, tensor infos and then each tensor's data, one at a time; close the writer."""
    _require(jobs)
    for job in jobs:
        writer.add_tensor_info(job.out_name, job.shape, job.dtype, job.nbytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for job in jobs:
        data = _convert(job)
        writer.write_tensor_data(data)
        del data
        if on_tensor is not None:
            on_tensor(job)
    writer.close()
