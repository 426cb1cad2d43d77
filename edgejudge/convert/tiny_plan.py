"""The tiny LLaVA fixture's dimensions and tensor plan: what :mod:`edgejudge.convert.tiny` writes.

:class:`TinySpec` holds the model dimensions (defaults = gguf-llava.md D.1; presets ``realistic`` and
``minimal``). :func:`plan_tensors` lists every tensor of a checkpoint (and of its external tower directory)
as a :class:`PlannedTensor`: name, shape and a deterministic initialiser seeded by
``default_rng([seed, crc32(key)])`` where key is the original-layout name, so both layouts share weights and
any tensor can be regenerated on its own. :func:`round_to` gives the stored BF16/F16 bits.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from edgejudge.errors import InputError

__all__ = ["TinySpec", "PlannedTensor", "TOWER_DIR", "plan_tensors", "round_to", "hf_vocab_rows"]


TOWER_DIR = "clip-vision-tower"
_VISION = "model.vision_tower.vision_tower.vision_model."
_HF_RENAMES = (
    ("model.embed_tokens.", "language_model.model.embed_tokens."),
    ("model.layers.", "language_model.model.layers."),
    ("model.norm.", "language_model.model.norm."),
    ("lm_head.", "language_model.lm_head."),
    ("model.mm_projector.0.", "multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "multi_modal_projector.linear_2."),
    (_VISION, "vision_tower.vision_model."),
)


@dataclass(frozen=True)
class TinySpec:
    """Model dimensions. Defaults are the recommended fixture (gguf-llava.md D.1): 16 image tokens."""

    text_hidden: int = 256
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 4
    text_ff: int = 512
    vocab_size: int = 512
    context_length: int = 512
    vision_hidden: int = 64
    vision_layers: int = 3
    vision_heads: int = 2
    vision_ff: int = 128
    image_size: int = 56
    patch_size: int = 14
    select_layer: int = -2
    rms_norm_eps: float = 1e-5
    seed: int = 0
    rope_theta: float = 10000.0
    vision_eps: float = 1e-5
    projection_dim: int = 32

    @classmethod
    def realistic(cls, seed: int = 0) -> TinySpec:
        """CLIP ViT-L/14-336 tower + a ~1.1B LLaMA (TinyLlama-like widths, 32000 vocab): ~3.1 GB in BF16."""
        return cls(
            text_hidden=2048, text_layers=22, text_heads=16, text_kv_heads=16, text_ff=5632, vocab_size=32000,
            context_length=2048, vision_hidden=1024, vision_layers=24, vision_heads=16, vision_ff=4096,
            image_size=336, patch_size=14, projection_dim=768, seed=seed,
        )  # fmt: skip

    @classmethod
    def minimal(cls, seed: int = 0) -> TinySpec:
        """The smallest useful model (9 image tokens, 1 text layer): the CLS self-test's, built in ~1 s."""
        return cls(
            text_hidden=64, text_layers=1, text_heads=4, text_kv_heads=4, text_ff=128, vocab_size=384,
            context_length=64, vision_hidden=32, vision_layers=2, vision_heads=2, vision_ff=64,
            image_size=42, patch_size=14, seed=seed,
        )  # fmt: skip

    @property
    def head_dim(self) -> int:
        return self.text_hidden // self.text_heads

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def check(self) -> None:
        """Raise InputError if the dimensions break a llama.cpp / mtmd constraint (gguf-llava.md D.1)."""
        problems = []
        if self.text_hidden % self.text_heads or self.head_dim % 2:
            problems.append("text_hidden must be a multiple of text_heads with an even head_dim")
        if self.text_heads % self.text_kv_heads:
            problems.append("text_heads must be a multiple of text_kv_heads")
        if self.vision_hidden % self.vision_heads:
            problems.append("vision_hidden must be a multiple of vision_heads")
        if self.vision_ff == self.vision_hidden:
            problems.append("vision_ff must differ from vision_hidden (clip.cpp swaps ffn up/down otherwise)")
        if self.image_size % self.patch_size:
            problems.append("image_size must be a multiple of patch_size")
        if not -self.vision_layers <= self.select_layer < 0:
            problems.append("select_layer must be negative and within the vision layers")
        if self.vocab_size < 384:
            problems.append("vocab_size must be >= 384 (3 specials + 256 bytes + corpus characters)")
        if problems:
            raise InputError("invalid TinySpec: " + "; ".join(problems), hint="adjust the dimensions")


@dataclass(frozen=True)
class PlannedTensor:
    """A tensor of the fixture: file name, seeding key (original-layout name), shape and initialiser."""

    name: str
    key: str
    shape: tuple[int, ...]
    init: str = "normal"  # "normal" (std) | "ones" (1 + std·N) | "inv_freq"
    std: float = 1.0
    theta: float = field(default=10000.0, repr=False)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def values(self, seed: int) -> np.ndarray:
        """The float32 values before rounding to the stored dtype (deterministic)."""
        if self.init == "inv_freq":
            dim = 2 * self.shape[0]
            return (1.0 / self.theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)).astype(np.float32)
        rng = np.random.default_rng([seed, zlib.crc32(self.key.encode())])
        out = rng.standard_normal(self.shape, dtype=np.float32)
        out *= np.float32(self.std)
        if self.init == "ones":
            out += np.float32(1.0)
        return out


def round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """Storage bits of float32 ``values`` for dtype "bf16" (uint16, round-to-nearest-even) or "f16"."""
    if dtype == "f16":
        return values.astype(np.float16)
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    out = bits >> np.uint32(16)  # the one temporary; the rest is in place (values stay untouched)
    out &= np.uint32(1)
    out += np.uint32(0x7FFF)
    out += bits
    out >>= np.uint32(16)
    return out.astype(np.uint16)


def _text_plan(s: TinySpec, vocab_rows: int) -> Iterator[PlannedTensor]:
    h, hd, ff = s.text_hidden, s.head_dim, s.text_ff
    yield PlannedTensor("model.embed_tokens.weight", "model.embed_tokens.weight", (vocab_rows, h))
    for i in range(s.text_layers):
        p = f"model.layers.{i}."
        for proj, rows in (
            ("q", s.text_heads * hd),
            ("k", s.text_kv_heads * hd),
            ("v", s.text_kv_heads * hd),
        ):
            yield PlannedTensor(f"{p}self_attn.{proj}_proj.weight", "", (rows, h), std=h**-0.5)
        yield PlannedTensor(
            f"{p}self_attn.o_proj.weight", "", (h, s.text_heads * hd), std=(s.text_heads * hd) ** -0.5
        )
        yield PlannedTensor(
            f"{p}self_attn.rotary_emb.inv_freq", "", (hd // 2,), "inv_freq", theta=s.rope_theta
        )
        yield PlannedTensor(f"{p}mlp.gate_proj.weight", "", (ff, h), std=h**-0.5)
        yield PlannedTensor(f"{p}mlp.up_proj.weight", "", (ff, h), std=h**-0.5)
        yield PlannedTensor(f"{p}mlp.down_proj.weight", "", (h, ff), std=ff**-0.5)
        yield PlannedTensor(f"{p}input_layernorm.weight", "", (h,), "ones", 0.1)
        yield PlannedTensor(f"{p}post_attention_layernorm.weight", "", (h,), "ones", 0.1)
    yield PlannedTensor("model.norm.weight", "", (h,), "ones", 0.1)


def _vision_plan(s: TinySpec, prefix: str = _VISION) -> Iterator[PlannedTensor]:
    d, ff, p = s.vision_hidden, s.vision_ff, s.patch_size
    yield PlannedTensor(prefix + "embeddings.class_embedding", "", (d,))
    yield PlannedTensor(
        prefix + "embeddings.patch_embedding.weight", "", (d, 3, p, p), std=(3 * p * p) ** -0.5
    )
    yield PlannedTensor(prefix + "embeddings.position_embedding.weight", "", (s.n_patches + 1, d), std=0.5)
    yield PlannedTensor(prefix + "pre_layrnorm.weight", "", (d,), "ones", 0.1)
    yield PlannedTensor(prefix + "pre_layrnorm.bias", "", (d,), std=0.1)
    for i in range(s.vision_layers):
        q = f"{prefix}encoder.layers.{i}."
        for proj in ("k", "v", "q", "out"):
            yield PlannedTensor(f"{q}self_attn.{proj}_proj.weight", "", (d, d), std=d**-0.5)
            yield PlannedTensor(f"{q}self_attn.{proj}_proj.bias", "", (d,), std=0.1)
        yield PlannedTensor(f"{q}layer_norm1.weight", "", (d,), "ones", 0.1)
        yield PlannedTensor(f"{q}layer_norm1.bias", "", (d,), std=0.1)
        yield PlannedTensor(f"{q}mlp.fc1.weight", "", (ff, d), std=d**-0.5)
        yield PlannedTensor(f"{q}mlp.fc1.bias", "", (ff,), std=0.1)
        yield PlannedTensor(f"{q}mlp.fc2.weight", "", (d, ff), std=ff**-0.5)
        yield PlannedTensor(f"{q}mlp.fc2.bias", "", (d,), std=0.1)
        yield PlannedTensor(f"{q}layer_norm2.weight", "", (d,), "ones", 0.1)
        yield PlannedTensor(f"{q}layer_norm2.bias", "", (d,), std=0.1)
    yield PlannedTensor(prefix + "post_layernorm.weight", "", (d,), "ones", 0.1)
    yield PlannedTensor(prefix + "post_layernorm.bias", "", (d,), std=0.1)


def _projector_plan(s: TinySpec) -> Iterator[PlannedTensor]:
    h, d = s.text_hidden, s.vision_hidden
    yield PlannedTensor("model.mm_projector.0.weight", "", (h, d), std=d**-0.5)
    yield PlannedTensor("model.mm_projector.0.bias", "", (h,), std=0.1)
    yield PlannedTensor("model.mm_projector.2.weight", "", (h, h), std=h**-0.5)
    yield PlannedTensor("model.mm_projector.2.bias", "", (h,), std=0.1)


def _rename(t: PlannedTensor, name: str, key: str | None = None) -> PlannedTensor:
    return PlannedTensor(name, key or t.key or t.name, t.shape, t.init, t.std, t.theta)


def hf_vocab_rows(spec: TinySpec) -> int:
    """llava-hf text vocab: SentencePiece vocab + ``<image>`` + ``<pad>``, padded to a multiple of 64."""
    return -(-(spec.vocab_size + 2) // 64) * 64


def plan_tensors(
    spec: TinySpec, layout: str = "original", tower_weights: str = "inside", clip_config: str = "vision"
) -> tuple[list[PlannedTensor], list[PlannedTensor]]:
    """(checkpoint tensors in state-dict order, tensors of the tower directory's weight file)."""
    vocab_rows = hf_vocab_rows(spec) if layout == "llava-hf" else spec.vocab_size
    text = [_rename(t, t.name) for t in _text_plan(spec, vocab_rows)]
    vision = [_rename(t, t.name) for t in _vision_plan(spec)]
    proj = [_rename(t, t.name) for t in _projector_plan(spec)]
    head = _rename(
        PlannedTensor("lm_head.weight", "", (vocab_rows, spec.text_hidden), std=spec.text_hidden**-0.5),
        "lm_head.weight",
    )
    inside = tower_weights in ("inside", "both")
    ckpt = text + (vision if inside else []) + proj + [head]
    tower: list[PlannedTensor] = []
    if tower_weights in ("external", "both"):
        salt = (
            "#tower" if tower_weights == "both" else ""
        )  # "both": the tower copy differs from the checkpoint's
        tower = [_rename(t, "vision_model." + t.name[len(_VISION) :], t.key + salt) for t in vision]
        if clip_config == "clip":
            tower.append(
                PlannedTensor(
                    "visual_projection.weight",
                    "visual_projection.weight" + salt,
                    (spec.projection_dim, spec.vision_hidden),
                    std=spec.vision_hidden**-0.5,
                )
            )
    if layout == "llava-hf":
        renamed = []
        for t in ckpt:
            new = t.name
            for old, hf in _HF_RENAMES:
                if new.startswith(old):
                    new = hf + new[len(old) :]
                    break
            renamed.append(_rename(t, new))
        ckpt = renamed
    return ckpt, tower
