"""The CLS-order self-test: where does the installed libmtmd put CLIP's class token?

llama.cpp as bundled with llama-cpp-python 0.3.36 concatenates CLS *after* the patches and then adds the
position table in order (ggml-org/llama.cpp#25814), so a standard table gives every patch its neighbour's
position embedding. A fixed libmtmd puts CLS first. ``run_selftest`` generates a tiny random LLaVA, converts
it, writes its mmproj twice (standard table, and rotated by one row), encodes one image with real mtmd and
compares each with the numpy reference (Hugging Face semantics):

- standard table, "first" runtime: ``out[k] ≈ ref[k]``;
- rotated table, "last" runtime: ``out[k] ≈ ref[k+1]`` and ``out[-1] ≈ proj(CLS)``.

The layout that matches decides ``cls_position``. It also checks the text model's logits against the
reference. ``runtime_cls_position`` caches the answer in ``config.cache_dir()`` keyed by the
llama-cpp-python version and libmtmd's file size and mtime; a fresh run takes about a second or two.

The native runtime is reached only through ``edgejudge.native`` (``TextModel``, ``MtmdContext``, log
control); the tiny model comes from ``edgejudge.fixtures`` and is converted with ``edgejudge.convert``.
Nothing below imports this module: the engine and the converter receive the CLS position from their caller.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._fs import atomic_write
from ._jsonl import loads_line
from .config import cache_dir
from .errors import EngineError

if TYPE_CHECKING:
    from .native.model import TextModel

__all__ = [
    "SelftestReport",
    "run_selftest",
    "runtime_cls_position",
    "cache_key",
    "encode_image",
    "rel_err",
]

_CACHE_FILE = "cls-selftest.json"
_MATCH_TOL = 0.05  # relative error below which a layout "matches" (fixture reaches ~1e-3)
_TEXT_TOKENS = (1, 17, 42, 99, 128, 200, 255, 300, 7, 64, 150, 33)


@dataclass(frozen=True)
class SelftestReport:
    """Result of the self-test: the CLS position and the fidelity of the tiny model on this runtime."""

    cls_position: str
    text_max_abs_err: float
    vision_rel_err: float
    seconds: float


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """‖got − want‖ / ‖want‖ (Frobenius)."""
    return float(np.linalg.norm(np.asarray(got, np.float64) - want) / max(np.linalg.norm(want), 1e-30))


def cache_key() -> str:
    """llama-cpp-python version + libmtmd size and mtime: changes whenever the runtime does."""
    from .native.mtmd import bindings_version, library_file

    stat = library_file().stat()
    return f"llama-cpp-python {bindings_version()} libmtmd {stat.st_size} {stat.st_mtime_ns}"


def encode_image(model: TextModel, mmproj: Path, rgb: np.ndarray, *, n_threads: int = 2) -> np.ndarray:
    """mtmd's image embeddings [n_tokens, n_embd] for a square RGB image of exactly the tower's size
    (through the engine's own :class:`~edgejudge.native.mtmd.MtmdContext`, on the CPU, logs silenced)."""
    from .native.log import quiet_native_logs

    height, width = rgb.shape[:2]
    pixels = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    with quiet_native_logs():
        ctx = model.open_projector(mmproj, use_gpu=False, n_threads=n_threads)
        try:
            chunks = ctx.tokenize("", pixels, width, height, "selftest", "")
            try:
                chunk = next((c for c in chunks if not c.is_text), None)
                if chunk is None:
                    raise EngineError("mtmd produced no image chunk", hint="reinstall llama-cpp-python")
                return ctx.encode(chunk).reshape(chunk.n_tokens, ctx.n_embd)
            finally:
                chunks.close()
        finally:
            ctx.close()


def run_selftest() -> SelftestReport:
    """Build, convert and run a tiny LLaVA on the installed llama.cpp; see the module docstring."""
    from .convert import convert_checkpoint
    from .convert.hparams import plan_conversion
    from .convert.mmproj_writer import mmproj_jobs, write_mmproj_gguf
    from .convert.readers import open_checkpoint
    from .fixtures.reference import image_features, text_logits
    from .fixtures.tiny import TinySpec, make_tiny_llava
    from .native.log import quiet_native_logs
    from .native.model import TextModel

    started = time.perf_counter()
    spec = TinySpec.minimal()
    with tempfile.TemporaryDirectory(prefix="edgejudge-selftest-") as tmp:
        root = Path(tmp)
        ckpt_dir = make_tiny_llava(root / "ckpt", spec, fmt="safetensors", dtype="f16")
        result = convert_checkpoint(
            ckpt_dir, root / "out", name="selftest", quant="F16", mmproj_quant="F16", cls_position="first"
        )
        rotated = root / "out" / "mmproj-rotated.gguf"
        with open_checkpoint(ckpt_dir) as ckpt:
            plan = plan_conversion(ckpt)
            jobs = mmproj_jobs(plan, ckpt, ckpt, "last")
            write_mmproj_gguf(rotated, plan, jobs, name="selftest", cls_position="last")

        rng = np.random.default_rng(0)
        rgb = rng.integers(0, 256, size=(spec.image_size, spec.image_size, 3), dtype=np.uint8)
        tokens = [t % spec.vocab_size for t in _TEXT_TOKENS]
        ref_logits = text_logits(ckpt_dir, tokens)
        ref_patches, ref_cls = image_features(ckpt_dir, rgb)
        with quiet_native_logs():
            model = TextModel(result.text_model, n_ctx=64, n_batch=64, n_threads=2, logits_all=True)
            try:
                model.eval(tokens)
                logits = model.scores(len(tokens))
                out_first = encode_image(model, result.mmproj, rgb)
                out_last = encode_image(model, rotated, rgb)
            finally:
                model.close()
    err_first = rel_err(out_first, ref_patches)
    err_last = max(rel_err(out_last[:-1], ref_patches[1:]), rel_err(out_last[-1], ref_cls))
    best = min(err_first, err_last)
    if best > _MATCH_TOL:
        raise EngineError(
            f"the installed libmtmd matches neither CLS layout (rel. err first {err_first:.3f}, "
            f"last {err_last:.3f})",
            hint="use llama-cpp-python==0.3.36 (pinned by edgejudge) or report the llama.cpp version",
        )
    return SelftestReport(
        cls_position="first" if err_first <= err_last else "last",
        text_max_abs_err=float(np.abs(logits - ref_logits).max()),
        vision_rel_err=best,
        seconds=time.perf_counter() - started,
    )


def _read_cache(path: Path) -> dict[str, Any]:
    """The cache file's JSON object; anything unreadable (missing, damaged, too deep) is an empty cache."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return {}
    data = loads_line(text).value
    return data if isinstance(data, dict) else {}


def runtime_cls_position() -> str:
    """ "first" | "last": where the installed libmtmd puts CLS (self-test result, cached on disk)."""
    path = cache_dir() / _CACHE_FILE
    key = cache_key()
    entry = _read_cache(path).get(key)
    if isinstance(entry, dict) and entry.get("cls_position") in ("first", "last"):
        return str(entry["cls_position"])
    report = run_selftest()
    data = _read_cache(path)
    data[key] = asdict(report)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(data, indent=2).encode("utf-8"))
    except OSError:
        pass  # an unwritable cache only costs a re-run next time
    return report.cls_position
