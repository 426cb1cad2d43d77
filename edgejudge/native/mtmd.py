"""A small typed wrapper over ``llama_cpp.mtmd_cpp`` (libmtmd of llama-cpp-python 0.3.36).

Owns the native mtmd objects edgejudge uses and frees each deterministically: the context
(``MtmdContext``), bitmaps (freed right after tokenizing) and chunk lists (``Chunks``). Tokenizing goes
through ``mtmd_tokenize_from_parts`` with ``parse_special=False`` on every text part, so user text can never
inject a media marker, BOS/EOS or any other special token: the structure is always text | image | text with
exactly one BOS (added by mtmd to the first text chunk). The text model it binds to is a
``native.model.TextModel`` (``TextModel.open_projector``), which also decodes the image embeddings into its
own KV cache (``TextModel.eval_image``). Also: which libmtmd is loaded (``library_file``,
``bindings_version``), for caches of what the runtime does.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import llama_cpp.mtmd_cpp as mtmd
import numpy as np

from .._closing import Closing
from ..errors import EngineError
from .log import VERBOSE_HINT

__all__ = ["MtmdContext", "Chunks", "Chunk", "TEXT", "IMAGE", "library_file", "bindings_version"]

TEXT = mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT
IMAGE = mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE


def library_file() -> Path:
    """The libmtmd shared library llama-cpp-python loaded."""
    return Path(mtmd._libmtmd._name)


def bindings_version() -> str:
    """llama-cpp-python's version (the llama.cpp it bundles)."""
    return str(llama_cpp.__version__)


@dataclass(frozen=True)
class Chunk:
    """A view of one chunk of a tokenized prompt (valid while its ``Chunks`` is open)."""

    index: int
    kind: int  # TEXT or IMAGE
    n_tokens: int
    n_pos: int
    tokens: tuple[int, ...]  # text tokens; () for an image
    chunk_id: str | None  # the image id (its sha256) for an image chunk
    ptr: int

    @property
    def is_text(self) -> bool:
        return self.kind == TEXT


class Chunks(Closing):
    """An owned ``mtmd_input_chunks`` list; iterate for ``Chunk`` views; ``close()`` frees it."""

    def __init__(self, ptr: int) -> None:
        self._ptr: int | None = ptr
        self.items: tuple[Chunk, ...] = tuple(self._read())

    def _read(self) -> Iterator[Chunk]:
        assert self._ptr is not None
        for i in range(mtmd.mtmd_input_chunks_size(self._ptr)):
            c = mtmd.mtmd_input_chunks_get(self._ptr, i)
            if c is None:
                raise EngineError("mtmd returned an empty chunk", hint=VERBOSE_HINT)
            kind = mtmd.mtmd_input_chunk_get_type(c)
            n_tokens = mtmd.mtmd_input_chunk_get_n_tokens(c)
            tokens: tuple[int, ...] = ()
            if kind == TEXT:
                n = ctypes.c_size_t()
                arr = mtmd.mtmd_input_chunk_get_tokens_text(c, ctypes.byref(n))
                tokens = tuple(int(arr[j]) for j in range(n.value)) if arr else ()
            raw_id = mtmd.mtmd_input_chunk_get_id(c)
            yield Chunk(
                index=i,
                kind=kind,
                n_tokens=n_tokens,
                n_pos=mtmd.mtmd_input_chunk_get_n_pos(c),
                tokens=tokens,
                chunk_id=raw_id.decode("utf-8", "replace") if raw_id else None,
                ptr=c,
            )

    def __iter__(self) -> Iterator[Chunk]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def n_pos(self) -> int:
        return sum(c.n_pos for c in self.items)

    def close(self) -> None:
        if self._ptr is not None:
            mtmd.mtmd_input_chunks_free(self._ptr)
            self._ptr = None


class MtmdContext:
    """An mtmd context bound to a loaded text model. ``close()`` is idempotent."""

    def __init__(
        self,
        mmproj_path: str | Path,
        text_model: llama_cpp.llama_model_p,
        *,
        use_gpu: bool = True,
        n_threads: int = 1,
        warmup: bool = False,
        verbose: bool = False,
    ) -> None:
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = bool(use_gpu)
        params.print_timings = bool(verbose)
        params.n_threads = int(n_threads)
        params.warmup = bool(warmup)
        ctx = mtmd.mtmd_init_from_file(str(mmproj_path).encode("utf-8"), text_model, params)
        if ctx is None:
            raise EngineError(
                f"cannot load the vision projector {Path(mmproj_path).name}",
                hint=f"check that it is an mmproj converted for this text model ({VERBOSE_HINT})",
            )
        self._ctx: int | None = ctx
        if not mtmd.mtmd_support_vision(ctx):
            self.close()
            raise EngineError(
                f"{Path(mmproj_path).name} has no vision encoder", hint="pass the mmproj of a vision model"
            )
        self.n_embd = int(llama_cpp.llama_model_n_embd_inp(text_model))

    @property
    def ptr(self) -> int:
        if self._ctx is None:
            raise EngineError("the engine is closed", hint="create a new engine")
        return self._ctx

    def tokenize(self, before: str, rgb: bytes, width: int, height: int, image_id: str, after: str) -> Chunks:
        """Tokenize text | image | text; BOS once; no special-token parsing in either text."""
        if width <= 0 or height <= 0 or len(rgb) != width * height * 3:
            raise EngineError(
                f"image buffer of {len(rgb)} bytes does not match {width}x{height} RGB",
                hint="pass raw RGB bytes of width*height*3",
            )
        data = (ctypes.c_uint8 * len(rgb)).from_buffer_copy(rgb)
        bitmap = mtmd.mtmd_bitmap_init(width, height, data)
        if bitmap is None:
            raise EngineError("mtmd could not create a bitmap", hint="check the image size")
        chunks_ptr = mtmd.mtmd_input_chunks_init()
        try:
            mtmd.mtmd_bitmap_set_id(bitmap, image_id.encode("ascii"))
            texts = []
            for text in (before, after):
                raw = text.encode("utf-8")
                t = mtmd.mtmd_input_text()
                t.text = raw
                t.text_len = len(raw)
                t.add_special = False
                t.parse_special = False
                texts.append((t, raw))  # keep raw alive
            part_before = mtmd.mtmd_input_part(text=ctypes.pointer(texts[0][0]), bitmap=None)
            part_image = mtmd.mtmd_input_part(text=None, bitmap=bitmap)
            part_after = mtmd.mtmd_input_part(text=ctypes.pointer(texts[1][0]), bitmap=None)
            array = (ctypes.POINTER(mtmd.mtmd_input_part) * 3)(
                ctypes.pointer(part_before), ctypes.pointer(part_image), ctypes.pointer(part_after)
            )
            rc = mtmd.mtmd_tokenize_from_parts(self.ptr, chunks_ptr, array, 3, True)
            if rc != 0:
                raise EngineError(f"mtmd could not tokenize the prompt (code {rc})", hint="check the image")
            chunks = Chunks(chunks_ptr)
            chunks_ptr = None
            return chunks
        finally:
            mtmd.mtmd_bitmap_free(bitmap)
            if chunks_ptr is not None:
                mtmd.mtmd_input_chunks_free(chunks_ptr)

    def encode(self, chunk: Chunk) -> np.ndarray:
        """Run the vision encoder on an image chunk; a float32 copy of [n_tokens * n_embd] embeddings."""
        rc = mtmd.mtmd_encode_chunk(self.ptr, chunk.ptr)
        if rc != 0:
            raise EngineError(f"the vision encoder failed (code {rc})", hint=VERBOSE_HINT)
        out = mtmd.mtmd_get_output_embd(self.ptr)
        if not out:
            raise EngineError("the vision encoder returned no embeddings", hint=VERBOSE_HINT)
        n = chunk.n_tokens * self.n_embd
        return np.ctypeslib.as_array(out, shape=(n,)).astype(np.float32, copy=True)

    def decode_image(
        self, lctx: llama_cpp.llama_context_p, chunk: Chunk, embd: np.ndarray, n_past: int, n_batch: int
    ) -> int:
        """Decode pre-computed image embeddings into the KV cache at ``n_past``; returns the new n_past."""
        embd = np.ascontiguousarray(embd, dtype=np.float32)
        new_n_past = llama_cpp.llama_pos(0)
        rc = mtmd.mtmd_helper_decode_image_chunk(
            self.ptr,
            lctx,
            chunk.ptr,
            embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
            llama_cpp.llama_pos(n_past),
            llama_cpp.llama_seq_id(0),
            n_batch,
            ctypes.byref(new_n_past),
            mtmd.mtmd_helper_post_decode_callback(),
            None,
        )
        if rc != 0:
            raise EngineError(f"decoding the image embeddings failed (code {rc})", hint="raise n_ctx")
        return int(new_n_past.value)

    def close(self) -> None:
        if self._ctx is not None:
            mtmd.mtmd_free(self._ctx)
            self._ctx = None
