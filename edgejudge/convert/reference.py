"""Numpy reference forwards of LLaVA-1.5 in Hugging Face semantics, reading checkpoints via the readers.

Used by the converter tests and the CLS self-test as the ground truth llama.cpp is compared against:

- :func:`text_logits`: the LLaMA decoder (``LlamaForCausalLM``): RMSNorm, rotate-half RoPE with
  ``rope_theta`` (and linear ``rope_scaling``), causal attention with grouped-query heads, SiLU-gated MLP,
  HF (un-permuted) q/k weights, ``lm_head`` (tied to the embeddings when absent).
- :func:`image_features`: the CLIP vision tower (patch conv as a matmul, class embedding first, position
  embeddings, ``pre_layrnorm``, encoder blocks with quick-GELU) up to ``hidden_states[select_layer]`` —
  ``hidden_states[0]`` is the embeddings after ``pre_layrnorm``, so ``-2`` is the output of block n-2 — then
  the LLaVA projector (Linear, GELU(erf), Linear) on the patch rows and on CLS separately.

Both layouts are supported: original (``model.*``, ``model.vision_tower.vision_tower.*``,
``model.mm_projector.*``, tower hyper-parameters from the ``mm_vision_tower`` directory) and llava-hf
(``language_model.*``, ``vision_tower.*``, ``multi_modal_projector.*``, ``text_config``/``vision_config``).
With ``round_f16`` every weight of two or more dimensions is rounded to float16 first, as the F16 GGUF and
mmproj store them (1-D tensors stay float32 there too). Computation is float64.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import erf

from edgejudge.convert.readers import Checkpoint, open_checkpoint, open_tensor_dir
from edgejudge.convert.tiny_meta import CLIP_MEAN, CLIP_STD
from edgejudge.errors import ConversionError, InputError

__all__ = ["text_logits", "image_features", "BUILTIN_TOWERS"]

#: Vision hyper-parameters of towers known by name (used when the tower is not a local directory).
BUILTIN_TOWERS: dict[str, dict[str, Any]] = {
    "openai/clip-vit-large-patch14-336": {
        "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
        "image_size": 336, "patch_size": 14, "layer_norm_eps": 1e-5, "hidden_act": "quick_gelu",
        "projection_dim": 768,
    },
}  # fmt: skip

_ORIGINAL_VISION = "model.vision_tower.vision_tower.vision_model."
_HF_VISION = "vision_tower.vision_model."


class _Weights:
    """Float64 weights from a checkpoint, 2-D+ optionally rounded through float16."""

    def __init__(self, ckpt: Checkpoint, round_f16: bool) -> None:
        self.ckpt, self.round_f16 = ckpt, round_f16

    def __call__(self, name: str) -> np.ndarray:
        if name not in self.ckpt:
            raise ConversionError(
                f"tensor {name} is missing from {self.ckpt.directory}", hint="check the checkpoint"
            )
        w = self.ckpt.load(name)
        if self.round_f16 and w.ndim >= 2:
            w = w.astype(np.float16)
        return w.astype(np.float64)


def _is_hf(ckpt: Checkpoint) -> bool:
    return "language_model.model.embed_tokens.weight" in ckpt or "text_config" in ckpt.config


def _rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """HF rotate-half RoPE on [heads, n, hd] with cos/sin [n, hd]."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def text_logits(ckpt_dir: str | Path, token_ids: list[int], *, round_f16: bool = True) -> np.ndarray:
    """Logits [n_tokens, vocab] (float64) of the checkpoint's LLaMA for ``token_ids`` (no BOS added)."""
    with open_checkpoint(ckpt_dir) as ckpt:
        hf = _is_hf(ckpt)
        cfg: Mapping[str, Any] = ckpt.config.get("text_config", ckpt.config) if hf else ckpt.config
        pre = "language_model.model." if hf else "model."
        head = "language_model.lm_head.weight" if hf else "lm_head.weight"
        get = _Weights(ckpt, round_f16)
        embed = get(pre + "embed_tokens.weight")
        ids = np.asarray(token_ids, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0 or ids.min() < 0 or ids.max() >= embed.shape[0]:
            raise InputError("token ids must be a non-empty list within the vocabulary", hint="check the ids")
        n_layers = int(cfg["num_hidden_layers"])
        n_heads = int(cfg["num_attention_heads"])
        n_kv = int(cfg.get("num_key_value_heads") or n_heads)
        eps = float(cfg.get("rms_norm_eps", 1e-6))
        theta = float(cfg.get("rope_theta", 10000.0))
        hd = embed.shape[1] // n_heads
        pos = np.arange(ids.size, dtype=np.float64)
        scaling = cfg.get("rope_scaling")
        if scaling:
            if scaling.get("type", scaling.get("rope_type")) != "linear":
                raise ConversionError(f"unsupported rope_scaling {scaling}", hint="only linear is supported")
            pos = pos / float(scaling["factor"])
        freqs = np.outer(pos, 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
        cos, sin = np.cos(np.concatenate([freqs, freqs], -1)), np.sin(np.concatenate([freqs, freqs], -1))
        n = ids.size
        causal = np.triu(np.full((n, n), -np.inf), k=1)
        x = embed[ids]
        for i in range(n_layers):
            p = f"{pre}layers.{i}."
            h = _rms_norm(x, get(p + "input_layernorm.weight"), eps)
            q = (h @ get(p + "self_attn.q_proj.weight").T).reshape(n, n_heads, hd).transpose(1, 0, 2)
            k = (h @ get(p + "self_attn.k_proj.weight").T).reshape(n, n_kv, hd).transpose(1, 0, 2)
            v = (h @ get(p + "self_attn.v_proj.weight").T).reshape(n, n_kv, hd).transpose(1, 0, 2)
            q, k = _rope(q, cos, sin), _rope(k, cos, sin)
            k, v = np.repeat(k, n_heads // n_kv, axis=0), np.repeat(v, n_heads // n_kv, axis=0)
            att = _softmax(q @ k.transpose(0, 2, 1) / np.sqrt(hd) + causal)
            out = (att @ v).transpose(1, 0, 2).reshape(n, n_heads * hd)
            x = x + out @ get(p + "self_attn.o_proj.weight").T
            h = _rms_norm(x, get(p + "post_attention_layernorm.weight"), eps)
            gate = h @ get(p + "mlp.gate_proj.weight").T
            up = h @ get(p + "mlp.up_proj.weight").T
            x = x + (gate / (1.0 + np.exp(-gate)) * up) @ get(p + "mlp.down_proj.weight").T
        x = _rms_norm(x, get(pre + "norm.weight"), eps)
        return x @ (get(head) if head in ckpt else embed).T


def _vision_config(ckpt: Checkpoint, hf: bool) -> dict[str, Any]:
    if hf:
        return dict(ckpt.config.get("vision_config") or {})
    tower = str(ckpt.config.get("mm_vision_tower") or ckpt.config.get("vision_tower") or "")
    path = Path(tower).expanduser()
    path = path if path.is_absolute() else ckpt.directory / path
    if tower and (path / "config.json").is_file():
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
        return dict(cfg.get("vision_config", cfg))
    if tower in BUILTIN_TOWERS:
        return dict(BUILTIN_TOWERS[tower])
    raise ConversionError(f"vision tower {tower!r} is not a local directory with a config.json", hint="")


def _tower_source(ckpt: Checkpoint, hf: bool) -> tuple[Checkpoint, str, bool]:
    """(checkpoint holding the vision weights, their name prefix, whether it must be closed by us)."""
    prefix = _HF_VISION if hf else _ORIGINAL_VISION
    if prefix + "embeddings.class_embedding" in ckpt:
        return ckpt, prefix, False
    tower = Path(str(ckpt.config.get("mm_vision_tower", ""))).expanduser()
    tower = tower if tower.is_absolute() else ckpt.directory / tower
    if not tower.is_dir():
        raise ConversionError("the vision tower weights are neither in the checkpoint nor local", hint="")
    ext = open_tensor_dir(tower)
    return ext, "vision_model.", True


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _act(name: str, x: np.ndarray) -> np.ndarray:
    if name == "quick_gelu":
        return x / (1.0 + np.exp(-1.702 * x))
    if name == "gelu":
        return _gelu(x)
    raise ConversionError(f"unsupported vision activation {name!r}", hint="CLIP towers use quick_gelu")


def _projector(ckpt: Checkpoint, hf: bool, get: _Weights) -> list[tuple[np.ndarray, np.ndarray]]:
    if hf:
        names = ["multi_modal_projector.linear_1", "multi_modal_projector.linear_2"]
    else:
        kind = str(ckpt.config.get("mm_projector_type", "linear"))
        match = re.fullmatch(r"mlp(\d+)x_gelu", kind)
        if kind == "linear":
            names = ["model.mm_projector"]
        elif match:
            names = [f"model.mm_projector.{2 * i}" for i in range(int(match.group(1)))]
        else:
            raise ConversionError(f"unsupported mm_projector_type {kind!r}", hint="LLaVA-1.5 uses mlp2x_gelu")
    return [(get(n + ".weight"), get(n + ".bias")) for n in names]


def image_features(
    ckpt_dir: str | Path, rgb: np.ndarray, *, round_f16: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(patch features [n_patches, D_text], projected CLS [D_text]) for a square ``image_size`` RGB image."""
    with open_checkpoint(ckpt_dir) as ckpt:
        hf = _is_hf(ckpt)
        vcfg = _vision_config(ckpt, hf)
        select = int(ckpt.config.get("vision_feature_layer" if hf else "mm_vision_select_layer", -2))
        src, prefix, owned = _tower_source(ckpt, hf)
        try:
            get = _Weights(src, round_f16)
            patch_w = get(prefix + "embeddings.patch_embedding.weight")
            d, _, p, _ = patch_w.shape
            pos = get(prefix + "embeddings.position_embedding.weight")
            grid = int(round((pos.shape[0] - 1) ** 0.5))
            size = grid * p
            img = np.asarray(rgb)
            if img.shape != (size, size, 3) or img.dtype != np.uint8:
                raise InputError(
                    f"expected a {size}x{size} RGB uint8 image, got {img.shape} {img.dtype}", hint=""
                )
            x = (img.astype(np.float64) / 255.0 - np.asarray(CLIP_MEAN)) / np.asarray(CLIP_STD)
            cols = x.reshape(grid, p, grid, p, 3).transpose(0, 2, 4, 1, 3).reshape(grid * grid, 3 * p * p)
            emb = np.concatenate(
                [get(prefix + "embeddings.class_embedding")[None], cols @ patch_w.reshape(d, -1).T]
            )
            eps = float(vcfg.get("layer_norm_eps", 1e-5))
            heads = int(vcfg["num_attention_heads"])
            n_layers = int(vcfg.get("num_hidden_layers", 0)) or sum(
                1
                for n in src.names()
                if re.fullmatch(re.escape(prefix) + r"encoder\.layers\.\d+\.layer_norm1\.weight", n)
            )
            act = str(vcfg.get("hidden_act", "quick_gelu"))
            h = _layer_norm(
                emb + pos, get(prefix + "pre_layrnorm.weight"), get(prefix + "pre_layrnorm.bias"), eps
            )
            blocks = select % (n_layers + 1)  # hidden_states has n_layers + 1 entries
            n, hd = h.shape[0], d // heads
            for i in range(blocks):
                q_ = f"{prefix}encoder.layers.{i}."

                def lin(name: str, inp: np.ndarray, q_: str = q_) -> np.ndarray:
                    return inp @ get(q_ + name + ".weight").T + get(q_ + name + ".bias")

                y = _layer_norm(h, get(q_ + "layer_norm1.weight"), get(q_ + "layer_norm1.bias"), eps)
                q = lin("self_attn.q_proj", y).reshape(n, heads, hd).transpose(1, 0, 2) * hd**-0.5
                k = lin("self_attn.k_proj", y).reshape(n, heads, hd).transpose(1, 0, 2)
                v = lin("self_attn.v_proj", y).reshape(n, heads, hd).transpose(1, 0, 2)
                att = _softmax(q @ k.transpose(0, 2, 1)) @ v
                h = h + lin("self_attn.out_proj", att.transpose(1, 0, 2).reshape(n, d))
                y = _layer_norm(h, get(q_ + "layer_norm2.weight"), get(q_ + "layer_norm2.bias"), eps)
                h = h + lin("mlp.fc2", _act(act, lin("mlp.fc1", y)))
        finally:
            if owned:
                src.close()
        layers = _projector(ckpt, hf, _Weights(ckpt, round_f16))
        out = h
        for j, (w, b) in enumerate(layers):
            out = out @ w.T + b
            if j < len(layers) - 1:
                out = _gelu(out)
        return out[1:], out[0]
