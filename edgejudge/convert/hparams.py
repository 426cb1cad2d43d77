"""Hyper-parameters and tensor locations of a LLaVA checkpoint, read from its own files and validated.

``plan_conversion(ckpt)`` reads every value from the checkpoint's ``config.json`` (never hard-coded model
sizes), resolves the vision tower named by ``mm_vision_tower`` (a local CLIP directory, absolute or relative
to the checkpoint; a hub repo id; or the built-in entry for ``openai/clip-vit-large-patch14-336`` so the real
judge converts offline), finds where the text model, projector and tower live in the tensor names, and
checks everything against the weight shapes. Two layouts are supported: the original LLaVA-1.5
(``LlavaLlamaForCausalLM``, what Prometheus-Vision ships) and llava-hf (``LlavaForConditionalGeneration``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .limits import quoted, shown
from .tower import (
    BUILTIN_TOWERS,
    CLIP_MEAN,
    CLIP_STD,
    VisionHParams,
    bad,
    check_vision,
    positive_float,
    positive_int,
    resolve_tower,
    vision_hparams_from_config,
)

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "CLIP_MEAN",
    "CLIP_STD",
    "BUILTIN_TOWERS",
    "TextHParams",
    "VisionHParams",
    "TensorNames",
    "ConvertPlan",
    "plan_conversion",
    "vision_hparams_from_config",
]

SUPPORTED_ARCHITECTURES = (
    "LlavaLlamaForCausalLM (model_type llava_llama / llava; original LLaVA-1.5, Prometheus-Vision)",
    "LlavaForConditionalGeneration (llava-hf layout)",
)
#: LlamaConfig defaults of transformers (llava-hf ``text_config`` omits keys equal to them).
_LLAMA_DEFAULTS: dict[str, Any] = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "vocab_size": 32000,
}
_LAYER = re.compile(r"layers\.([0-9]{1,9})\.")
#: rows of the token embedding (LLaMA: 32000; the largest vocabularies in use: ~256K).
_MAX_VOCAB = 2**22


@dataclass(frozen=True)
class TextHParams:
    """The LLaMA language model (``vocab_size`` = rows of the token embedding)."""

    hidden_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_size: int
    context_length: int
    rms_eps: float
    rope_theta: float
    vocab_size: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_heads


@dataclass(frozen=True)
class TensorNames:
    """Where the parts live in the tensor names (prefixes end with a dot)."""

    text_prefix: str  # "model." | "language_model.model."
    lm_head: str | None  # None: tied to the token embedding
    vision_prefix: str  # "model.vision_tower.vision_tower.vision_model." | "vision_model." (external)
    projector: tuple[str, str, str, str]  # weight0, bias0, weight2, bias2


@dataclass(frozen=True)
class ConvertPlan:
    """Everything the writers need besides the tensors themselves."""

    architecture: str
    layout: str  # "original" | "llava-hf"
    text: TextHParams
    vision: VisionHParams
    names: TensorNames
    select_layer: int
    keep_layers: int  # CLIP blocks that run: n_layers + select_layer + 1
    tower: str  # mm_vision_tower as written in the config (for messages and metadata)
    tower_dir: Path | None  # directory holding the tower weights when they are not in the checkpoint
    tower_repo: str | None  # hub repo to fetch tower weights from when neither applies
    tower_weights: str  # "checkpoint" | "external" (checked) | "pending" (open the tower, plan again)


def _layout(config: Mapping[str, Any]) -> tuple[str, str]:
    archs = config.get("architectures") or []
    arch = str(archs[0]) if isinstance(archs, list) and archs else ""
    model_type = str(config.get("model_type", ""))
    if arch == "LlavaForConditionalGeneration" or (not arch and "text_config" in config):
        return arch or "LlavaForConditionalGeneration", "llava-hf"
    if arch == "LlavaLlamaForCausalLM" or (not arch and model_type in ("llava_llama", "llava")):
        return arch or "LlavaLlamaForCausalLM", "original"
    raise bad(
        f"unsupported architecture {quoted(arch or model_type or 'unknown')}: supported are "
        + "; ".join(SUPPORTED_ARCHITECTURES),
        "edgejudge converts LLaVA-1.5-style judges such as prometheus-eval/prometheus-vision-7b-v1.0",
    )


def _find_suffix(names: list[str], suffix: str) -> list[str]:
    return [n for n in names if n == suffix or n.endswith("." + suffix)]


def _layer_count(names: list[str], prefix: str) -> int:
    found = {int(m.group(1)) for n in names if n.startswith(prefix) and (m := _LAYER.match(n[len(prefix) :]))}
    return len(found)


def _text_hparams(cfg: Mapping[str, Any], ckpt: Any, prefix: str, where: str) -> TextHParams:
    hidden = positive_int(cfg, "hidden_size", where)
    heads = positive_int(cfg, "num_attention_heads", where)
    kv_heads = cfg.get("num_key_value_heads") or heads
    if isinstance(kv_heads, bool) or not isinstance(kv_heads, int) or kv_heads <= 0 or heads % kv_heads:
        raise bad(
            f"{where}: num_key_value_heads {quoted(kv_heads)} does not divide {heads} heads",
            "fix config.json",
        )
    rope_scaling = cfg.get("rope_scaling")
    if rope_scaling:
        raise bad(
            f"{where}: rope_scaling {quoted(rope_scaling)} is not supported", "LLaVA-1.5 judges use none"
        )
    embed = ckpt.info(prefix + "embed_tokens.weight")
    if len(embed.shape) != 2 or not 0 < embed.shape[0] <= _MAX_VOCAB:
        raise bad(
            f"the token embedding {prefix}embed_tokens.weight has shape {shown(tuple(embed.shape))}; "
            f"expected (vocabulary of at most {_MAX_VOCAB}, hidden_size)",
            "the checkpoint is corrupt or not a LLaMA-based LLaVA",
        )
    text = TextHParams(
        hidden_size=hidden,
        n_layers=positive_int(cfg, "num_hidden_layers", where),
        n_heads=heads,
        n_kv_heads=int(kv_heads),
        ffn_size=positive_int(cfg, "intermediate_size", where),
        context_length=positive_int(cfg, "max_position_embeddings", where),
        rms_eps=positive_float(cfg, "rms_norm_eps", where),
        rope_theta=positive_float(cfg, "rope_theta", where, default=10000.0),
        vocab_size=int(embed.shape[0]),
    )
    if hidden % heads or (hidden // heads) % 2:
        raise bad(f"{where}: hidden_size {hidden} is not {heads} heads of an even size", "fix config.json")
    checks = [
        ("embed_tokens.weight", embed.shape[1:], (hidden,)),
        ("layers.0.self_attn.k_proj.weight", None, (text.n_kv_heads * text.head_dim, hidden)),
        ("layers.0.mlp.gate_proj.weight", None, (text.ffn_size, hidden)),
    ]
    for name, got, want in checks:
        shape = got if got is not None else tuple(ckpt.info(prefix + name).shape)
        if tuple(shape) != want:
            raise bad(
                f"{where} does not match the weights: {prefix}{name} has shape {tuple(shape)}, "
                f"config says {want}",
                "the config.json belongs to a different model than the weight shards",
            )
    found = _layer_count(ckpt.names(), prefix)
    if found != text.n_layers:
        raise bad(
            f"{where}: num_hidden_layers is {text.n_layers} but the weights hold {found} layers",
            "the config.json belongs to a different model than the weight shards",
        )
    return text


def _require(
    config: Mapping[str, Any], key: str, wanted: str, hint: str, *, default: str | None = None, note: str = ""
) -> None:
    """Refuse a config value other than ``wanted`` (absent = ``default``, itself ``wanted`` unless given)."""
    value = config.get(key, wanted if default is None else default)
    if value != wanted:
        raise bad(f"{key} {quoted(value)}{note} is not supported", hint)


def plan_conversion(ckpt: Any, tower_ckpt: Any | None = None) -> ConvertPlan:
    """Read and validate everything about ``ckpt`` (an open Checkpoint) that the writers need.

    ``tower_ckpt`` is the open standalone tower (``open_tensor_dir``) when the checkpoint has no vision
    weights; call once without it, then again with it when ``plan.tower_dir``/``plan.tower_repo`` is needed.
    """
    config: Mapping[str, Any] = ckpt.config
    root = Path(ckpt.directory)
    arch, layout = _layout(config)
    names: list[str] = list(ckpt.names())

    embeds = _find_suffix(names, "embed_tokens.weight")
    if len(embeds) != 1:
        raise bad("the checkpoint has no (or several) token embeddings", "is this a LLaVA checkpoint?")
    text_prefix = embeds[0][: -len("embed_tokens.weight")]
    heads = _find_suffix(names, "lm_head.weight")
    lm_head = heads[0] if heads else None

    if layout == "llava-hf":
        text_cfg = config.get("text_config")
        text_cfg = dict(text_cfg) if isinstance(text_cfg, Mapping) else {}
        if text_cfg.get("model_type", "llama") != "llama":
            raise bad(
                f"unsupported language model {quoted(text_cfg.get('model_type'))} in the llava-hf checkpoint",
                "only LLaMA-based LLaVA models are supported",
            )
        text_cfg = {**_LLAMA_DEFAULTS, **{k: v for k, v in text_cfg.items() if v is not None}}
        text = _text_hparams(text_cfg, ckpt, text_prefix, "config.json text_config")
        vcfg = config.get("vision_config")
        if not isinstance(vcfg, Mapping):
            raise bad("vision config missing: config.json has no vision_config", "fix config.json")
        vision = vision_hparams_from_config(vcfg, "config.json vision_config")
        tower, tower_dir, tower_repo = "vision_config", None, None
        select = config.get("vision_feature_layer", -2)
        _require(config, "vision_feature_select_strategy", "default", "use 'default'")
        _require(config, "projector_hidden_act", "gelu", "LLaVA-1.5 uses gelu")
        proj_stem = _find_suffix(names, "multi_modal_projector.linear_1.weight")
        stem = proj_stem[0][: -len("linear_1.weight")] if proj_stem else "multi_modal_projector."
        projector = (
            stem + "linear_1.weight",
            stem + "linear_1.bias",
            stem + "linear_2.weight",
            stem + "linear_2.bias",
        )
    else:
        text = _text_hparams(config, ckpt, text_prefix, "config.json")
        tower, vision, tower_dir, tower_repo = resolve_tower(config, root)
        select = config.get("mm_vision_select_layer", -2)
        _require(
            config, "mm_projector_type", "mlp2x_gelu", "LLaVA-1.5 judges use mlp2x_gelu", default="linear"
        )
        _require(config, "mm_vision_select_feature", "patch", "LLaVA-1.5 uses 'patch'")
        _require(config, "mm_patch_merge_type", "flat", "use a LLaVA-1.5 model", note=" (LLaVA-1.6 tiling)")
        proj_stem = _find_suffix(names, "mm_projector.0.weight")
        stem = proj_stem[0][: -len("0.weight")] if proj_stem else "model.mm_projector."
        projector = (stem + "0.weight", stem + "0.bias", stem + "2.weight", stem + "2.bias")

    patch = _find_suffix(names, "embeddings.patch_embedding.weight")
    if patch:
        vision_src, vision_prefix = ckpt, patch[0][: -len("embeddings.patch_embedding.weight")]
        tower_dir = tower_repo = None
    elif tower_ckpt is not None:
        inner = _find_suffix(list(tower_ckpt.names()), "embeddings.patch_embedding.weight")
        if not inner:
            raise bad(
                f"vision tower {tower} holds no CLIP vision weights", "point mm_vision_tower at a CLIP model"
            )
        vision_src, vision_prefix = tower_ckpt, inner[0][: -len("embeddings.patch_embedding.weight")]
    elif tower_dir is None and tower_repo is None:
        raise bad("the checkpoint holds no vision tower weights", "use a checkpoint that includes the tower")
    else:
        vision_src, vision_prefix = None, ""

    for name in projector:
        if name not in ckpt:
            raise bad(f"the checkpoint has no projector tensor {name}", "is this a LLaVA-1.5 checkpoint?")
    w0, w2 = tuple(ckpt.info(projector[0]).shape), tuple(ckpt.info(projector[2]).shape)
    if len(w0) != 2 or len(w2) != 2:
        raise bad(
            f"projector weights {projector[0]} {shown(w0)} / {projector[2]} {shown(w2)} are not matrices",
            "the checkpoint is corrupt or not a LLaVA-1.5 checkpoint",
        )
    if w2[0] != text.hidden_size or w2[1] != w0[0]:
        raise bad(
            f"projector output width {w2[0]} does not match the text model width {text.hidden_size}",
            "the projector and the language model come from different models",
        )
    if w0[1] != vision.hidden_size:
        raise bad(
            f"projector input width {w0[1]} does not match the vision width {vision.hidden_size}",
            "mm_vision_tower names a different tower than the projector was trained on",
        )
    if not isinstance(select, int) or isinstance(select, bool):
        raise bad(f"vision select layer {quoted(select)} is not an integer", "LLaVA-1.5 uses -2")
    keep = vision.n_layers + select + 1 if select < 0 else select
    if not 1 <= keep <= vision.n_layers:
        raise bad(f"vision select layer {select} is out of range for {vision.n_layers} layers", "fix config")

    if vision_src is not None:
        vnames = [n for n in vision_src.names() if n.startswith(vision_prefix)]
        short = {n[len(vision_prefix) :]: tuple(vision_src.info(n).shape) for n in vnames}
        check_vision(vision, short, f"vision config of {tower}")
        found = _layer_count(vnames, vision_prefix + "encoder.")
        if found > vision.n_layers or found < keep:
            raise bad(
                f"vision config inconsistent with the weights: {vision.n_layers} layers configured, "
                f"{found} in the weights, {keep} needed",
                "mm_vision_tower names a different CLIP tower than the weights",
            )
    return ConvertPlan(
        architecture=arch,
        layout=layout,
        text=text,
        vision=vision,
        names=TensorNames(text_prefix, lm_head, vision_prefix, projector),
        select_layer=select,
        keep_layers=keep,
        tower=tower,
        tower_dir=tower_dir,
        tower_repo=tower_repo,
        tower_weights="pending"
        if vision_src is None
        else ("checkpoint" if vision_src is ckpt else "external"),
    )
