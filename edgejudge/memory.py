"""What a judge needs in memory: ``estimate(text, mmproj, options)`` → ``MemoryNeeds``, from the GGUF files.

THE estimate ``edgejudge doctor`` and ``models list`` report, computed from the files' tensor sizes and
hyperparameters and the load settings, with the engine's own rules for what it allocates
(``engine._load``: whether the file is mapped, how many KV cells a call allocates; ``engine._prompt``'s
forced-tail reserve). Parts, in bytes:

- ``weights``: the text model's tensors, once (read into memory, or mapped and resident);
- ``repack_copy``: with the file mapped and the model on the CPU, the second copy llama.cpp's CPU backend
  makes of the weights it repacks for its kernels (``CPU_REPACK``: Q4_0, Q4_K and IQ4_NL layer weights on
  x86 with AVX2 and ARM with i8mm; Q6_K, Q5_K and Q8_0 stay as they are), whose mapped pages stay resident;
- ``mmproj``: the projector's tensors;
- ``kv``: the KV cache, ``kv_cells`` cells × layers × (K + V width) × the cell type's bytes;
- ``compute``: the part of llama.cpp's compute buffer a prompt touches (the buffer is reserved for the
  worst case but only the pages used become resident): one ``n_batch`` micro-batch's activations and,
  without flash attention, its attention scores of every head over the prompt's cells; the logits;
- ``vision``: the CLIP graph's activations for one image (tokens × (8 × width + heads × tokens) floats);
- ``runtime``: Python, the libraries, llama.cpp's own allocations (``RUNTIME_BYTES``, the tiny judge's
  measured peak less its few MB of weights).

Two cases: ``judge`` (one verdict: ``TYPICAL_PROMPT_TOKENS`` of text beside the image and the
``max_tokens`` budget, so the KV cache the ``fit`` size allocates) and ``batch`` (rows decoded in
parallel fill the context: ``n_ctx`` cells). Measured against ``edgejudge judge`` on the tiny judge in
``tests/test_memory_estimate.py`` and on the 7B shape by ``scripts/bench_memory.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:
    from .load_options import LoadOptions

__all__ = ["MemoryNeeds", "estimate", "RUNTIME_BYTES", "TYPICAL_PROMPT_TOKENS"]

#: Python, numpy, Pillow, the CLI libraries and llama.cpp's own allocations: the peak RSS of
#: ``edgejudge judge`` on the tiny judge (92-108 MiB measured, of which 5-20 MiB weights, KV and buffers).
RUNTIME_BYTES = 90 * 2**20
#: Text tokens of a typical judge prompt beside the image (system, rubric, instruction, response,
#: reference): the issue's 7B measurement had 1396 positions with 576 of them the image.
TYPICAL_PROMPT_TOKENS = 850
#: Bytes per KV cell element, by ``kv_cache_type``.
_CELL_BYTES = {"f16": 2.0, "q8_0": 34 / 32}
#: Tensor types the CPU backend repacks (x86 AVX2 / ARM i8mm rules of ggml-cpu's repack.cpp).
_REPACKED = {"Q4_0", "Q4_K", "IQ4_NL"}


@dataclass(frozen=True)
class MemoryNeeds:
    """Estimated bytes one judge process needs (see the module docstring); ``total`` is their sum."""

    weights: int
    repack_copy: int
    mmproj: int
    kv_cells: int
    kv: int
    compute: int
    vision: int
    runtime: int
    mmap: bool

    @property
    def total(self) -> int:
        parts = (
            self.weights,
            self.repack_copy,
            self.mmproj,
            self.kv,
            self.compute,
            self.vision,
            self.runtime,
        )
        return sum(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"total": self.total}


@dataclass(frozen=True)
class _Shape:
    tensor_bytes: int
    repackable: int
    layers: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int


def _read(path: Path, what: str) -> tuple[Any, int, int]:
    from .judgefile import open_gguf

    reader = open_gguf(path, error=InputError, hint=f"re-convert or re-download the {what}")
    total = repackable = 0
    for t in reader.tensors:
        n = int(t.n_bytes)
        total += n
        shape = [int(x) for x in t.shape]
        if (
            t.tensor_type.name in _REPACKED
            and t.name.startswith("blk.")
            and len(shape) > 1
            and shape[1] % 8 == 0
        ):
            repackable += n
    return reader, total, repackable


def _field(reader: Any, key: str, default: int) -> int:
    fld = reader.fields.get(key)
    if fld is None:
        return default
    try:
        return int(fld.contents())
    except (TypeError, ValueError):
        return default


def _text_shape(path: Path) -> _Shape:
    reader, total, repackable = _read(path, "text model")
    arch = "llama"
    fld = reader.fields.get("general.architecture")
    if fld is not None:
        arch = str(fld.contents())
    n_embd = _field(reader, f"{arch}.embedding_length", 0)
    n_head = _field(reader, f"{arch}.attention.head_count", 1)
    vocab = next((int(t.shape[1]) for t in reader.tensors if t.name == "token_embd.weight"), 32000)
    return _Shape(
        tensor_bytes=total,
        repackable=repackable,
        layers=_field(reader, f"{arch}.block_count", 0),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=_field(reader, f"{arch}.attention.head_count_kv", n_head),
        n_ff=_field(reader, f"{arch}.feed_forward_length", 4 * n_embd),
        n_vocab=vocab,
    )


def judge_cells(options: LoadOptions, prompt_tokens: int, max_tokens: int) -> int:
    """KV cells the engine allocates for one verdict of ``prompt_tokens`` positions and a ``max_tokens``
    budget under ``options`` (the engine's ``kv_size`` rule, ``engine._load``)."""
    from .engine._load import first_cells, grown_cells
    from .engine.base import TAIL_RESERVE

    first = first_cells(options.kv_size, options.n_ctx, options.n_batch)
    return grown_cells(prompt_tokens + max_tokens + TAIL_RESERVE, first, options.n_ctx) or first


def estimate(
    text_model: str | Path,
    mmproj: str | Path,
    options: LoadOptions,
    *,
    case: str = "judge",
    max_tokens: int | None = None,
    prompt_tokens: int | None = None,
) -> MemoryNeeds:
    """What the pair needs under ``options`` (the model files as given, not ``options.model``) for ``case``
    ``judge`` (one verdict: ``prompt_tokens`` positions, default the image's plus ``TYPICAL_PROMPT_TOKENS``,
    and ``max_tokens``, default the setting's) or ``batch`` (``n_ctx`` cells in use)."""
    from .engine._load import use_mmap
    from .settings import default

    if case not in ("judge", "batch"):
        raise InputError(f"unknown case {case!r}", hint="use judge or batch")
    shape = _text_shape(Path(text_model))
    reader, mmproj_bytes, _ = _read(Path(mmproj), "projector")
    hidden = _field(reader, "clip.vision.embedding_length", 1024)
    heads = _field(reader, "clip.vision.attention.head_count", 16)
    image_tokens = (
        _field(reader, "clip.vision.image_size", 336) // _field(reader, "clip.vision.patch_size", 14)
    ) ** 2
    vision = 4 * (image_tokens + 1) * (8 * hidden + heads * (image_tokens + 1))
    mapped = use_mmap(options.mmap, options.n_gpu_layers)
    on_cpu = options.n_gpu_layers == 0 or not _offloads()
    budget = default("max_tokens") if max_tokens is None else max_tokens
    positions = image_tokens + TYPICAL_PROMPT_TOKENS if prompt_tokens is None else prompt_tokens
    cells = options.n_ctx if case == "batch" else judge_cells(options, positions, budget)
    span = min(cells, positions) if case == "judge" else cells  # the cells a prompt's batch attends to
    width = shape.n_embd * shape.n_head_kv // max(shape.n_head, 1)  # K (and V) row width per layer
    kv = int(cells * shape.layers * 2 * width * _CELL_BYTES[options.kv_cache_type])
    flash = options.kv_cache_type != "f16"
    ubatch = min(options.n_batch, cells)
    per_token = (0 if flash else span * shape.n_head) + 4 * shape.n_embd + 2 * shape.n_ff
    return MemoryNeeds(
        weights=shape.tensor_bytes,
        repack_copy=shape.repackable if mapped and on_cpu else 0,
        mmproj=mmproj_bytes,
        kv_cells=cells,
        kv=kv,
        compute=4 * ubatch * per_token + 4 * shape.n_vocab * options.parallel,
        vision=vision,
        runtime=RUNTIME_BYTES,
        mmap=mapped,
    )


def _offloads() -> bool:
    from .native.system import supports_gpu_offload

    return bool(supports_gpu_offload())
