"""Torch-free, memory-mapped checkpoint readers: safetensors and PyTorch zip-pickle shards.

:func:`open_checkpoint` opens a Hugging Face checkpoint directory (``config.json`` plus
``model.safetensors.index.json`` / ``pytorch_model.bin.index.json`` or a single unsharded file);
:func:`open_tensor_dir` does the same for a standalone vision-tower directory. Both validate everything up
front — shards exist, every index entry is in its shard, every tensor lies inside its file (truncated
shards), dtypes are known (int64 ``*position_ids`` buffers are skipped) — and raise
:class:`~edgejudge.errors.ConversionError` (one line + hint).

Tensors are never read whole into memory by the reader: each shard is ``mmap``-ed and
:meth:`Checkpoint.load` views a tensor with ``np.frombuffer`` (``as_strided`` for non-contiguous torch
views) and returns one float32 copy (BF16 is widened bit-wise). One shard file (mapping, its table,
views) is :mod:`edgejudge.convert.shard`'s; pickles go through the restricted unpickler of
:mod:`edgejudge.convert.torchpickle`.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from .._fs import user_path
from ..errors import ConversionError
from .limits import read_json_file, shown
from .shard import DTYPES, Entry, Shard, TensorInfo, bf16_to_f32

__all__ = ["TensorInfo", "Checkpoint", "open_checkpoint", "open_tensor_dir", "bf16_to_f32", "DTYPES"]

_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")


class Checkpoint:
    """An open checkpoint: tensor names in index order, their infos, and float32 loads from memory maps.

    Use as a context manager (or call :meth:`close`) to unmap the shards.
    """

    def __init__(
        self, directory: Path, config: dict[str, Any], weight_map: dict[str, str], shards: dict[str, Shard]
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

    def _entry(self, name: str) -> tuple[Shard, Entry]:
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
    shards: dict[str, Shard] = {}
    try:
        for shard_name in shard_names:
            shards[shard_name] = Shard(path / shard_name)
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
