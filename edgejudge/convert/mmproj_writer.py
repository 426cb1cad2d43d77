"""The mmproj GGUF (``general.architecture = "clip"``): CLIP vision tower + LLaVA-1.5 MLP projector.

Layout (see docs gguf-llava.md B.2–B.5): projector type ``mlp``; only the tower blocks LLaVA uses
(``keep = n_layers + select_layer + 1``), with ``block_count = keep`` and ``clip.vision.feature_layer =
[keep]`` so exactly ``keep`` blocks run whatever llama.cpp's legacy block-count rule does (#25817); no
post-layernorm, no ``use_gelu`` (quick-GELU); typed values (u32/f32, float lists for mean/std); class
embedding F32. With ``cls_position="last"`` (a libmtmd that concatenates CLS after the patches, #25814) the
position table is written rotated by one row, ``[1..N, 0]``, so every patch and CLS get their own
embedding; the pair contract's CLS stamp (:data:`edgejudge.judgefile.CLS_KEY`) records which table was
written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..judgefile import CLS_KEY, CLS_POSITIONS
from .hparams import ConvertPlan
from .stream import TensorJob, check_tensor_shape, write_streaming

__all__ = ["mmproj_jobs", "write_mmproj_gguf"]


def _job(
    source: Any,
    src: str,
    out: str,
    want: tuple[int, ...],
    *,
    f32: bool = False,
    rows: tuple[int, ...] | None = None,
) -> TensorJob:
    shape = tuple(source.info(src).shape)
    check_tensor_shape(src, shape, want)
    dtype = np.dtype(np.float32) if f32 or len(shape) <= 1 else np.dtype(np.float16)
    return TensorJob(out, src, source, shape, dtype, rows)


def mmproj_jobs(plan: ConvertPlan, ckpt: Any, tower: Any, cls_position: str) -> list[TensorJob]:
    """The mmproj tensors in GGUF order; ``tower`` holds the vision weights (``ckpt`` itself or external).
    Every tensor is checked to have the shape the vision config implies."""
    if cls_position not in CLS_POSITIONS:
        raise ValueError(f"cls_position must be one of {CLS_POSITIONS}, not {cls_position!r}")
    v = plan.names.vision_prefix
    vis = plan.vision
    d, ffn, p = vis.hidden_size, vis.ffn_size, vis.patch_size
    n_pos = vis.n_patches + 1
    rows = tuple(range(1, n_pos)) + (0,) if cls_position == "last" else None
    jobs = [
        _job(tower, v + "embeddings.class_embedding", "v.class_embd", (d,), f32=True),
        _job(tower, v + "embeddings.patch_embedding.weight", "v.patch_embd.weight", (d, 3, p, p)),
        _job(
            tower,
            v + "embeddings.position_embedding.weight",
            "v.position_embd.weight",
            (n_pos, d),
            rows=rows,
        ),
        _job(tower, v + "pre_layrnorm.weight", "v.pre_ln.weight", (d,)),
        _job(tower, v + "pre_layrnorm.bias", "v.pre_ln.bias", (d,)),
    ]
    parts = (
        ("self_attn.q_proj", "attn_q", (d, d)),
        ("self_attn.k_proj", "attn_k", (d, d)),
        ("self_attn.v_proj", "attn_v", (d, d)),
        ("self_attn.out_proj", "attn_out", (d, d)),
        ("layer_norm1", "ln1", (d,)),
        ("layer_norm2", "ln2", (d,)),
        ("mlp.fc1", "ffn_up", (ffn, d)),
        ("mlp.fc2", "ffn_down", (d, ffn)),
    )
    for i in range(plan.keep_layers):
        for src, out, weight in parts:
            for kind, want in (("weight", weight), ("bias", weight[:1])):
                jobs.append(
                    _job(tower, f"{v}encoder.layers.{i}.{src}.{kind}", f"v.blk.{i}.{out}.{kind}", want)
                )
    w0, b0, w2, b2 = plan.names.projector
    width = tuple(ckpt.info(w0).shape)[0]  # the projector's hidden width (checked 2-D by plan_conversion)
    text = plan.text.hidden_size
    jobs += [
        _job(ckpt, w0, "mm.0.weight", (width, d)),
        _job(ckpt, b0, "mm.0.bias", (width,)),
        _job(ckpt, w2, "mm.2.weight", (text, width)),
        _job(ckpt, b2, "mm.2.bias", (text,)),
    ]
    return jobs


def write_mmproj_gguf(
    path: Path,
    plan: ConvertPlan,
    jobs: list[TensorJob],
    *,
    name: str,
    cls_position: str,
    on_tensor: Callable[[TensorJob], None] | None = None,
) -> None:
    """Write the F16 clip GGUF of ``plan`` to ``path`` (streaming)."""
    import gguf

    vis = plan.vision
    w = gguf.GGUFWriter(path, "clip")
    try:
        w.add_type("mmproj")
        w.add_name(name)
        w.add_description(f"LLaVA-1.5 vision tower + mlp2x_gelu projector ({plan.tower})")
        w.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16))
        w.add_bool("clip.has_vision_encoder", True)
        w.add_string("clip.projector_type", "mlp")
        w.add_uint32("clip.vision.image_size", int(vis.image_size))
        w.add_uint32("clip.vision.patch_size", int(vis.patch_size))
        w.add_uint32("clip.vision.embedding_length", int(vis.hidden_size))
        w.add_uint32("clip.vision.feed_forward_length", int(vis.ffn_size))
        w.add_uint32("clip.vision.projection_dim", int(vis.projection_dim))
        w.add_uint32("clip.vision.block_count", int(plan.keep_layers))
        w.add_uint32("clip.vision.attention.head_count", int(vis.n_heads))
        w.add_float32("clip.vision.attention.layer_norm_epsilon", float(vis.layer_norm_eps))
        w.add_array("clip.vision.image_mean", [float(x) for x in vis.image_mean])
        w.add_array("clip.vision.image_std", [float(x) for x in vis.image_std])
        w.add_array("clip.vision.feature_layer", [int(plan.keep_layers)])
        w.add_string(CLS_KEY, cls_position)
        w.add_int32("edgejudge.clip.select_layer", int(plan.select_layer))
        write_streaming(w, jobs, on_tensor)
    finally:
        w.close()
