"""The model, generation and processor configs of a llava-hf export (``config.json``,
``generation_config.json``, ``preprocessor_config.json``, ``processor_config.json``).

Pure functions from a validated :class:`~edgejudge.convert.hparams.ConvertPlan` and the source tokenizer
(:mod:`edgejudge.convert._llava_hf_tokenizer`) to JSON-ready dicts; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConversionError
from ._llava_hf_tokenizer import IMAGE_TOKEN, SourceTokenizer
from .hparams import ConvertPlan
from .limits import shown

__all__ = ["model_config", "generation_config", "processor_files"]

_TORCH_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


def model_config(
    plan: ConvertPlan, tok: SourceTokenizer, dtype: str, source: Mapping[str, Any]
) -> dict[str, Any]:
    """``config.json``: a ``LlavaConfig`` (llama text model, CLIP vision model, LLaVA-1.5 feature choice)."""
    t, v = plan.text, plan.vision
    act = source.get("hidden_act", "silu")
    if act != "silu":
        raise ConversionError(
            f"config.json: hidden_act {shown(act)} is not supported", hint="LLaMA-based LLaVA-1.5 uses silu"
        )
    vocab = tok.pad_id + 1
    torch_dtype = _TORCH_DTYPES[dtype]
    text = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": t.hidden_size,
        "intermediate_size": t.ffn_size,
        "num_hidden_layers": t.n_layers,
        "num_attention_heads": t.n_heads,
        "num_key_value_heads": t.n_kv_heads,
        "head_dim": t.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": t.context_length,
        "rms_norm_eps": t.rms_eps,
        "rope_theta": t.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "vocab_size": vocab,
        "bos_token_id": tok.bos,
        "eos_token_id": tok.eos,
        "pad_token_id": tok.pad_id,
        "torch_dtype": torch_dtype,
    }
    vision = {
        "model_type": "clip_vision_model",
        "hidden_size": v.hidden_size,
        "intermediate_size": v.ffn_size,
        "num_hidden_layers": v.n_layers,
        "num_attention_heads": v.n_heads,
        "num_channels": 3,
        "image_size": v.image_size,
        "patch_size": v.patch_size,
        "layer_norm_eps": v.layer_norm_eps,
        "hidden_act": v.hidden_act,
        "projection_dim": v.projection_dim,
        "attention_dropout": 0.0,
        "dropout": 0.0,
    }
    return {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "text_config": text,
        "vision_config": vision,
        "image_token_index": tok.image_id,
        "image_token_id": tok.image_id,
        "image_seq_length": v.n_patches,
        "pad_token_id": tok.pad_id,
        "ignore_index": -100,
        "projector_hidden_act": "gelu",
        "multimodal_projector_bias": True,
        "vision_feature_layer": plan.select_layer,
        "vision_feature_select_strategy": "default",
        "tie_word_embeddings": False,
        "vocab_size": vocab,
        "torch_dtype": torch_dtype,
        "dtype": torch_dtype,
    }


def generation_config(tok: SourceTokenizer) -> dict[str, Any]:
    """``generation_config.json``: the source's, with the new ``<pad>`` id (vLLM applies its sampling
    defaults to requests that leave them out)."""
    gen = {k: v for k, v in tok.generation.items() if k not in ("transformers_version", "_from_model_config")}
    gen.update({"bos_token_id": tok.bos, "eos_token_id": tok.eos, "pad_token_id": tok.pad_id})
    return gen


def processor_files(plan: ConvertPlan) -> dict[str, Any]:
    """{file name: JSON value}: ``preprocessor_config.json`` (CLIPImageProcessor: shortest-edge resize,
    center crop, CLIP mean/std) and ``processor_config.json`` (LlavaProcessor: one ``<image>`` becomes one
    token per patch)."""
    v = plan.vision
    return {
        "preprocessor_config.json": {
            "image_processor_type": "CLIPImageProcessor",
            "processor_class": "LlavaProcessor",
            "do_resize": True,
            "size": {"shortest_edge": v.image_size},
            "resample": 3,
            "do_center_crop": True,
            "crop_size": {"height": v.image_size, "width": v.image_size},
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(v.image_mean),
            "image_std": list(v.image_std),
            "do_convert_rgb": True,
        },
        "processor_config.json": {
            "processor_class": "LlavaProcessor",
            "image_token": IMAGE_TOKEN,
            "patch_size": v.patch_size,
            "vision_feature_select_strategy": "default",
            "num_additional_image_tokens": 1,
        },
    }
