"""The tensors of a llava-hf export: which source tensor each one is, and the sharded safetensors writer.

:func:`plan_tensors` maps an original LLaVA-1.5 checkpoint (read through :mod:`edgejudge.convert.readers`,
validated by :func:`edgejudge.convert.hparams.plan_conversion`) onto the names the hub's llava-hf
checkpoints use and that vLLM and transformers' ``LlavaForConditionalGeneration`` read:

- ``model.embed_tokens`` / ``model.layers.*`` / ``model.norm`` → ``language_model.model.*`` (the
  ``rotary_emb.inv_freq`` buffers are dropped), ``lm_head`` → ``language_model.lm_head`` (the embedding
  again when the checkpoint ties them);
- the CLIP tower → ``vision_tower.vision_model.*`` (the ``vision_model.`` level written explicitly: vLLM
  rejects the ``vision_tower.embeddings.*`` names transformers 5 saves), position embeddings unchanged
  (the GGUF mmproj's class-token compensation is llama.cpp's and never written here);
- ``model.mm_projector.0/2`` → ``multi_modal_projector.linear_1/2``.

The token embedding and ``lm_head`` get ``extra_rows`` zero rows (``<image>``, ``<pad>``). Every tensor
keeps its stored dtype (BF16 bytes are copied as they are). :func:`write_shards` streams the tensors into
``model-0000k-of-0000n.safetensors`` files of at most ``max_shard_bytes`` (a larger tensor gets a shard of
its own) plus ``model.safetensors.index.json``, one tensor and one row chunk at a time, so memory stays
near one chunk whatever the checkpoint's size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .hparams import ConvertPlan
from .shard import DTYPES
from .stream import _release_pages

__all__ = ["OutTensor", "plan_tensors", "write_shards", "TEXT_PREFIX", "VISION_PREFIX", "PROJECTOR"]

TEXT_PREFIX = "language_model.model."
LM_HEAD = "language_model.lm_head.weight"
VISION_PREFIX = "vision_tower.vision_model."
PROJECTOR = (
    "multi_modal_projector.linear_1.weight",
    "multi_modal_projector.linear_1.bias",
    "multi_modal_projector.linear_2.weight",
    "multi_modal_projector.linear_2.bias",
)
#: the parts of a CLIP vision model that the llava-hf tower holds (anything else under the prefix is not one).
_VISION_PARTS = ("embeddings.", "pre_layrnorm.", "encoder.layers.", "post_layernorm.")
_TEXT_PARTS = ("embed_tokens.", "layers.", "norm.")
_CHUNK_BYTES = 8 << 20  # bytes copied per step


@dataclass(frozen=True)
class OutTensor:
    """One tensor of the export: its llava-hf name, where its data comes from, and ``extra_rows`` zero rows
    appended along the first axis. ``source`` is an open Checkpoint."""

    name: str
    source: Any
    src_name: str
    src_shape: tuple[int, ...]
    dtype: str  # the source's dtype code, kept: "F32" | "F16" | "BF16"
    extra_rows: int = 0

    @property
    def shape(self) -> tuple[int, ...]:
        if not self.extra_rows:
            return self.src_shape
        return (self.src_shape[0] + self.extra_rows, *self.src_shape[1:])

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype].itemsize

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.itemsize

    @property
    def src_nbytes(self) -> int:
        return math.prod(self.src_shape) * self.itemsize


def _out(name: str, source: Any, src_name: str, extra_rows: int = 0) -> OutTensor:
    info = source.info(src_name)
    return OutTensor(name, source, src_name, tuple(info.shape), info.dtype, extra_rows)


def plan_tensors(plan: ConvertPlan, ckpt: Any, tower: Any, extra_rows: int) -> tuple[list[OutTensor], int]:
    """(the export's tensors in writing order, the index of the first vision-side tensor).

    ``tower`` is the open checkpoint holding the vision weights (``ckpt`` itself when they are inside it).
    Language-model tensors come first, then the tower and the projector.
    """
    names = plan.names
    text: list[OutTensor] = []
    for src in ckpt.names():
        if not src.startswith(names.text_prefix):
            continue
        rest = src[len(names.text_prefix) :]
        if not rest.startswith(_TEXT_PARTS) or rest.endswith("rotary_emb.inv_freq"):
            continue
        extra = extra_rows if rest == "embed_tokens.weight" else 0
        text.append(_out(TEXT_PREFIX + rest, ckpt, src, extra))
    head_src = names.lm_head or names.text_prefix + "embed_tokens.weight"
    text.append(_out(LM_HEAD, ckpt, head_src, extra_rows))
    vision: list[OutTensor] = []
    for src in tower.names():
        if not src.startswith(names.vision_prefix):
            continue
        rest = src[len(names.vision_prefix) :]
        if rest.startswith(_VISION_PARTS) and not rest.endswith("position_ids"):
            vision.append(_out(VISION_PREFIX + rest, tower, src))
    vision += [_out(out, ckpt, src) for out, src in zip(PROJECTOR, names.projector, strict=True)]
    return text + vision, len(text)


def shard_groups(tensors: Sequence[OutTensor], max_shard_bytes: int) -> list[list[OutTensor]]:
    """Consecutive groups of at most ``max_shard_bytes`` (a tensor larger than that alone), each sorted by
    element size, largest first, so every tensor's offset in its file is a multiple of its element size."""
    groups: list[list[OutTensor]] = [[]]
    size = 0
    for t in tensors:
        if groups[-1] and size + t.nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(t)
        size += t.nbytes
    return [sorted(g, key=lambda t: -t.itemsize) for g in groups]


def _header(group: Sequence[OutTensor]) -> bytes:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in group:
        header[t.name] = {
            "dtype": t.dtype,
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    return len(raw).to_bytes(8, "little") + raw


def _write_tensor(fh: BinaryIO, t: OutTensor) -> None:
    raw = t.source.load_raw(t.src_name)
    rows = raw.reshape(t.src_shape[0], -1) if raw.ndim > 1 else raw.reshape(1, -1)
    width = max(1, rows.shape[1] * t.itemsize)
    step = max(1, _CHUNK_BYTES // width)
    for start in range(0, rows.shape[0], step):
        part = rows[start : start + step]
        fh.write(np.ascontiguousarray(part).data.cast("B"))
        _release_pages(part)
    del rows
    _release_pages(raw)
    del raw
    if t.extra_rows:
        row = math.prod(t.src_shape[1:]) * t.itemsize
        zeros = bytes(min(row * t.extra_rows, _CHUNK_BYTES))
        left = row * t.extra_rows
        while left:
            n = min(left, len(zeros))
            fh.write(zeros[:n])
            left -= n


def shard_name(k: int, n: int) -> str:
    return f"model-{k:05d}-of-{n:05d}.safetensors"


def write_shards(
    folder: Path,
    tensors: Sequence[OutTensor],
    max_shard_bytes: int,
    on_tensor: Callable[[OutTensor], None] | None = None,
) -> list[str]:
    """Write the shards and ``model.safetensors.index.json`` into ``folder``; return the shard names."""
    groups = shard_groups(tensors, max_shard_bytes)
    weight_map: dict[str, str] = {}
    files = []
    for k, group in enumerate(groups, 1):
        fname = shard_name(k, len(groups))
        files.append(fname)
        with open(folder / fname, "wb") as fh:
            fh.write(_header(group))
            for t in group:
                _write_tensor(fh, t)
                weight_map[t.name] = fname
                if on_tensor is not None:
                    on_tensor(t)
    index = {
        "metadata": {"total_size": sum(t.nbytes for t in tensors)},
        "weight_map": dict(sorted(weight_map.items())),
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return files
