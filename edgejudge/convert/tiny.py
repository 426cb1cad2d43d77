"""Random-weight LLaVA-1.5 checkpoints in the real on-disk layout, written without torch.

:func:`make_tiny_llava` writes what a Hugging Face checkpoint of LLaVA-1.5 / Prometheus-Vision looks like:
``config.json`` with the real keys, a SentencePiece ``tokenizer.model`` trained on the fly, tokenizer /
special-tokens / generation configs, ≥2 weight shards plus their index (BF16 torch zip-pickles or F16/BF16
safetensors), ``rotary_emb.inv_freq`` buffers the converter must skip, and a local CLIP tower directory
referenced *relatively* from ``mm_vision_tower``. Two layouts: ``original`` (LlavaLlamaForCausalLM, what
Prometheus-Vision ships) and ``llava-hf`` (LlavaForConditionalGeneration, vocab padded with ``<image>``).

Weights are deterministic: each tensor's values come from ``default_rng([seed, crc32(key)])`` where key is
its original-layout name, so both layouts share weights and any tensor can be regenerated on its own
(:func:`plan_tensors`). Writing streams one tensor at a time, so the realistic preset (multi-GB) needs only
about one tensor of memory. Dimensions and the tensor plan come from :mod:`edgejudge.convert.tiny_plan`
(re-exported here), metadata files from :mod:`edgejudge.convert.tiny_meta`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgejudge.convert import tiny_meta
from edgejudge.convert.tiny_plan import (
    TOWER_DIR,
    PlannedTensor,
    TinySpec,
    hf_vocab_rows,
    plan_tensors,
    round_to,
)
from edgejudge.convert.torchzip import StoredTensor, write_torch_zip
from edgejudge.errors import InputError

__all__ = [
    "TinySpec",
    "PlannedTensor",
    "TOWER_DIR",
    "plan_tensors",
    "round_to",
    "hf_vocab_rows",
    "make_tiny_llava",
]

ProgressFn = Callable[[str, int, int], None]


def _split(tensors: list[PlannedTensor], shards: int, itemsize: int) -> list[list[PlannedTensor]]:
    """Consecutive groups of roughly equal bytes, each non-empty."""
    shards = max(1, min(shards, len(tensors)))
    target = sum(t.numel for t in tensors) * itemsize / shards
    groups: list[list[PlannedTensor]] = [[]]
    acc = 0
    for i, t in enumerate(tensors):
        if groups[-1] and len(groups) < shards:
            if acc >= target * len(groups) or len(tensors) - i <= shards - len(groups):
                groups.append([])
        groups[-1].append(t)
        acc += t.numel * itemsize
    return groups


class _Writer:
    """Streams planned tensors into shard files, reporting bytes through ``progress``."""

    def __init__(self, spec: TinySpec, dtype: str, total: int, progress: ProgressFn | None) -> None:
        self.spec, self.dtype, self.total, self.progress, self.done = spec, dtype, total, progress, 0

    def data(self, t: PlannedTensor) -> memoryview:
        stored = round_to(t.values(self.spec.seed), self.dtype)
        self.done += stored.nbytes
        if self.progress is not None:
            self.progress(f"writing {t.name}", self.done, self.total)
        return np.ascontiguousarray(stored).data.cast("B")

    def safetensors(self, path: Path, tensors: list[PlannedTensor]) -> None:
        code = "BF16" if self.dtype == "bf16" else "F16"
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for t in tensors:
            header[t.name] = {
                "dtype": code,
                "shape": list(t.shape),
                "data_offsets": [offset, offset + t.numel * 2],
            }
            offset += t.numel * 2
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * ((-len(raw)) % 8)
        with open(path, "wb") as fh:
            fh.write(len(raw).to_bytes(8, "little") + raw)
            for t in tensors:
                fh.write(self.data(t))

    def torch_bin(self, path: Path, tensors: list[PlannedTensor]) -> None:
        code = "BF16" if self.dtype == "bf16" else "F16"
        stored = [StoredTensor(t.name, str(i), t.shape) for i, t in enumerate(tensors)]
        storages = {str(i): (code, t.numel) for i, t in enumerate(tensors)}
        write_torch_zip(path, stored, storages, lambda key: self.data(tensors[int(key)]))

    def shards(self, directory: Path, tensors: list[PlannedTensor], fmt: str, n: int, sharded: bool) -> None:
        groups = _split(tensors, n, 2)
        ext, stem = (".safetensors", "model") if fmt == "safetensors" else (".bin", "pytorch_model")
        weight_map: dict[str, str] = {}
        for k, group in enumerate(groups, 1):
            fname = f"{stem}-{k:05d}-of-{len(groups):05d}{ext}" if sharded else stem + ext
            (self.safetensors if fmt == "safetensors" else self.torch_bin)(directory / fname, group)
            weight_map.update((t.name, fname) for t in group)
        if sharded:
            index = {
                "metadata": {"total_size": sum(t.numel * 2 for t in tensors)},
                "weight_map": dict(sorted(weight_map.items())),  # save_pretrained sorts the names
            }
            (directory / f"{stem}{ext}.index.json").write_text(json.dumps(index, indent=2) + "\n")


def make_tiny_llava(
    directory: str | Path,
    spec: TinySpec = TinySpec(),  # noqa: B008 - frozen dataclass, immutable default
    *,
    fmt: str = "bin",
    layout: str = "original",
    dtype: str = "bf16",
    shards: int = 2,
    tower_weights: str = "inside",
    clip_config: str = "vision",
    progress: ProgressFn | None = None,
) -> Path:
    """Write a random-weight LLaVA-1.5 checkpoint into ``directory`` (absent or empty) and return it.

    fmt "bin" (torch zip-pickle) | "safetensors"; layout "original" | "llava-hf"; dtype "bf16" | "f16";
    tower_weights "inside" (vision weights in the shards, tower dir holds configs only) | "external" (only
    in the tower dir) | "both" (in both, with *different* values: the checkpoint's must win);
    clip_config "vision" (CLIPVisionConfig) | "clip" (CLIPConfig with vision_config). The directory appears
    atomically (built under a temporary sibling name, then renamed).
    """
    choices = {
        "fmt": (fmt, ("bin", "safetensors")),
        "layout": (layout, ("original", "llava-hf")),
        "dtype": (dtype, ("bf16", "f16")),
        "tower_weights": (tower_weights, ("inside", "external", "both")),
        "clip_config": (clip_config, ("vision", "clip")),
    }
    for what, (value, allowed) in choices.items():
        if value not in allowed:
            raise InputError(f"invalid {what} {value!r}", hint="choose one of: " + ", ".join(allowed))
    if layout == "llava-hf" and tower_weights != "inside":
        raise InputError(
            "the llava-hf layout keeps the vision tower inside the checkpoint", hint="use inside"
        )
    if shards < 1:
        raise InputError("shards must be >= 1", hint="use 2 (the default)")
    spec.check()
    target = Path(directory).expanduser().absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputError(f"{target} exists and is not an empty directory", hint="choose a new directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        ckpt, tower = plan_tensors(spec, layout, tower_weights, clip_config)
        total = 2 * sum(t.numel for t in ckpt + tower)
        writer = _Writer(spec, dtype, total, progress)
        if progress is not None:
            progress("training tokenizer", 0, total)
        tiny_meta.write_metadata(tmp, spec, layout=layout, dtype=dtype, clip_config=clip_config)
        writer.shards(tmp, ckpt, fmt, shards, sharded=True)
        if tower:
            writer.shards(tmp / TOWER_DIR, tower, fmt, 1, sharded=False)
        if target.exists():
            target.rmdir()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
