"""Non-weight files of the generated LLaVA checkpoints: configs, tokenizer files, the CLIP tower directory.

The SentencePiece model is trained on the fly (gguf-llava.md D.2 settings: BPE, byte fallback, split
digits, identity normalisation, dummy prefix; unk/bos/eos = 0/1/2, no pad piece) on a deterministic corpus:
judge vocabulary ("Feedback", "[RESULT]", digits, USER, ASSISTANT, the lines of the Prometheus template)
plus synthetic words made of syllables, as many as the vocabulary needs. The corpus is fed line by line,
as LLaMA's was, so "\n" is not a piece and tokenizes by byte fallback to ``<0x0A>`` = id 13, exactly like
the LLaMA vocabulary. A 32000-piece vocabulary (the realistic preset) trains in well under a second, so no
filler pieces are needed.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edgejudge.convert.tiny_plan import TinySpec

__all__ = ["CLIP_MEAN", "CLIP_STD", "train_tokenizer", "write_metadata", "llava_config", "clip_vision_config"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_TOWER_DIR = "clip-vision-tower"
_JUDGE_TEXT = """A chat between a curious user and an artificial intelligence assistant. The assistant gives \
helpful, detailed, and polite answers to the user's questions. USER: <image>
###Task Description:
An instruction (might include an Input inside it), a response to evaluate, a reference answer that gets a \
score of 5, image and a score rubric representing an evaluation criteria are given.
1. Write a detailed feedback that assess the quality of the response strictly based on the given score \
rubric, not evaluating in general.
2. After writing a feedback, write a score that is an integer between 1 and 5. You should refer to the \
score rubric.
3. The output format should look as follows: "Feedback: (write a feedback for criteria) [RESULT] (an \
integer number between 1 and 5)"
4. Please do not generate any other opening, closing, and explanations.

###The instruction to evaluate:
Describe the image in detail.

###Response to evaluate:
The picture shows a red car parked next to a tree, 3 people and 12 birds.

###Reference Answer (Score 5):
A red car is parked beside a large tree; three people stand near it while birds fly overhead.

###Score Rubrics:
[Is the description accurate and complete?]
Score 1: The response is inaccurate.
Score 2: The response is mostly inaccurate.
Score 3: The response is partly accurate.
Score 4: The response is accurate with minor omissions.
Score 5: The response is fully accurate and complete.

###Feedback: ASSISTANT: Feedback: The response identifies the car and the tree correctly, but it \
invents details. So the overall score is 4.
[RESULT] 4
[RESULT] 1 [RESULT] 2 [RESULT] 3 [RESULT] 4 [RESULT] 5 0 1 2 3 4 5 6 7 8 9 10 100 2024 3.5 (a) {b} <c> "d" 'e'
!?;:,.-_+=*/\\|@#$%^&~` é ü ñ ß ° 中文 日本語 😀"""
_SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + [
    "th",
    "ch",
    "sh",
    "str",
    "qu",
    "ng",
    "ck",
]


def train_tokenizer(vocab_size: int, seed: int = 0) -> bytes:
    """A serialized SentencePiece BPE model with exactly ``vocab_size`` pieces (deterministic)."""
    import sentencepiece as spm

    rng = np.random.default_rng([seed, 7])
    n_words = max(2000, 2 * vocab_size)
    syllables = np.array(_SYLLABLES)
    lengths = rng.integers(1, 5, size=n_words)
    picks = rng.integers(0, len(syllables), size=(n_words, 4))
    words = np.array(["".join(syllables[picks[i, : lengths[i]]]) for i in range(n_words)])
    lines = _JUDGE_TEXT.split("\n") * 20  # one line per sentence, as SentencePiece reads a corpus file
    lines += [" ".join(row) for row in words[rng.integers(0, n_words, size=(n_words // 2, 12))]]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
        max_sentence_length=16384,
    )
    return model.getvalue()


def _token(content: str) -> dict[str, Any]:
    return {
        "__type": "AddedToken",
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
    }


def _decoder_entry(content: str, special: bool = True) -> dict[str, Any]:
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": special,
    }


def clip_vision_config(spec: TinySpec) -> dict[str, Any]:
    """A ``CLIPVisionConfig`` dict for the spec's tower (quick_gelu, like CLIP ViT-L/14-336)."""
    return {
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "hidden_act": "quick_gelu",
        "hidden_size": spec.vision_hidden,
        "image_size": spec.image_size,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": spec.vision_ff,
        "layer_norm_eps": spec.vision_eps,
        "model_type": "clip_vision_model",
        "num_attention_heads": spec.vision_heads,
        "num_channels": 3,
        "num_hidden_layers": spec.vision_layers,
        "patch_size": spec.patch_size,
        "projection_dim": spec.projection_dim,
    }


def _text_config(spec: TinySpec, vocab: int) -> dict[str, Any]:
    return {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": spec.text_hidden,
        "initializer_range": 0.02,
        "intermediate_size": spec.text_ff,
        "max_position_embeddings": spec.context_length,
        "num_attention_heads": spec.text_heads,
        "num_hidden_layers": spec.text_layers,
        "num_key_value_heads": spec.text_kv_heads,
        "pad_token_id": 0,
        "pretraining_tp": 1,
        "rms_norm_eps": spec.rms_norm_eps,
        "rope_scaling": None,
        "rope_theta": spec.rope_theta,
        "tie_word_embeddings": False,
        "use_cache": True,
        "vocab_size": vocab,
    }


def llava_config(spec: TinySpec, *, layout: str, dtype: str) -> dict[str, Any]:
    """config.json: original ``LlavaLlamaForCausalLM`` or llava-hf ``LlavaForConditionalGeneration``."""
    torch_dtype = "bfloat16" if dtype == "bf16" else "float16"
    if layout == "llava-hf":
        from edgejudge.convert.tiny_plan import hf_vocab_rows

        vocab = hf_vocab_rows(spec)
        text = {**_text_config(spec, vocab), "model_type": "llama", "pad_token_id": spec.vocab_size + 1}
        return {
            "architectures": ["LlavaForConditionalGeneration"],
            "ignore_index": -100,
            "image_token_index": spec.vocab_size,
            "model_type": "llava",
            "pad_token_id": spec.vocab_size + 1,
            "projector_hidden_act": "gelu",
            "text_config": text,
            "tie_word_embeddings": False,
            "torch_dtype": torch_dtype,
            "transformers_version": "4.36.0",
            "vision_config": clip_vision_config(spec),
            "vision_feature_layer": spec.select_layer,
            "vision_feature_select_strategy": "default",
            "vocab_size": vocab,
        }
    return {
        "_name_or_path": "edgejudge/tiny-llava",
        "architectures": ["LlavaLlamaForCausalLM"],
        **_text_config(spec, spec.vocab_size),
        "freeze_mm_mlp_adapter": False,
        "image_aspect_ratio": "pad",
        "mm_hidden_size": spec.vision_hidden,
        "mm_patch_merge_type": "flat",
        "mm_projector_lr": None,
        "mm_projector_type": "mlp2x_gelu",
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": spec.select_layer,
        "mm_vision_tower": f"./{_TOWER_DIR}",
        "model_type": "llava_llama",
        "tokenizer_model_max_length": spec.context_length,
        "tokenizer_padding_side": "right",
        "torch_dtype": torch_dtype,
        "transformers_version": "4.31.0",
        "tune_mm_mlp_adapter": False,
        "use_mm_proj": True,
    }


def _preprocessor(spec: TinySpec) -> dict[str, Any]:
    return {
        "crop_size": {"height": spec.image_size, "width": spec.image_size},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": list(CLIP_MEAN),
        "image_processor_type": "CLIPImageProcessor",
        "image_std": list(CLIP_STD),
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": spec.image_size},
    }


def _dump(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_metadata(directory: Path, spec: TinySpec, *, layout: str, dtype: str, clip_config: str) -> None:
    """Every non-weight file of the checkpoint (and, for the original layout, the tower dir's configs)."""
    (directory / "tokenizer.model").write_bytes(train_tokenizer(spec.vocab_size, spec.seed))
    _dump(directory / "config.json", llava_config(spec, layout=layout, dtype=dtype))
    gen = {
        "_from_model_config": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "transformers_version": "4.31.0",
    }
    specials = {"bos_token": _token("<s>"), "eos_token": _token("</s>"), "unk_token": _token("<unk>")}
    tok_cfg: dict[str, Any] = {
        "add_bos_token": True,
        "add_eos_token": False,
        **specials,
        "clean_up_tokenization_spaces": False,
        "legacy": False,
        "model_max_length": spec.context_length,
        "pad_token": None,
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
    }
    special_map: dict[str, Any] = {
        k: {kk: vv for kk, vv in v.items() if kk != "__type"} for k, v in specials.items()
    }
    if layout == "llava-hf":
        image_id, pad_id = spec.vocab_size, spec.vocab_size + 1
        gen["pad_token_id"] = pad_id
        decoder = {
            "0": _decoder_entry("<unk>"),
            "1": _decoder_entry("<s>"),
            "2": _decoder_entry("</s>"),
            str(image_id): _decoder_entry("<image>"),
            str(pad_id): _decoder_entry("<pad>"),
        }
        tok_cfg = {
            "added_tokens_decoder": decoder,
            **tok_cfg,
            "pad_token": "<pad>",
            "processor_class": "LlavaProcessor",
        }
        special_map["pad_token"] = "<pad>"
        _dump(directory / "added_tokens.json", {"<image>": image_id, "<pad>": pad_id})
        _dump(directory / "preprocessor_config.json", _preprocessor(spec))
    else:
        special_map["pad_token"] = "<unk>"
        tower = directory / _TOWER_DIR
        tower.mkdir()
        vision = clip_vision_config(spec)
        if clip_config == "clip":
            text = {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_attention_heads": 2,
                "num_hidden_layers": 1,
                "max_position_embeddings": 77,
                "vocab_size": 1000,
                "model_type": "clip_text_model",
                "hidden_act": "quick_gelu",
                "projection_dim": spec.projection_dim,
            }
            clip = {
                "architectures": ["CLIPModel"],
                "initializer_factor": 1.0,
                "logit_scale_init_value": 2.6592,
                "model_type": "clip",
                "projection_dim": spec.projection_dim,
                "text_config": text,
                "torch_dtype": "float32",
                "vision_config": vision,
            }
            _dump(tower / "config.json", clip)
        else:
            _dump(
                tower / "config.json",
                {"architectures": ["CLIPVisionModel"], **vision, "torch_dtype": "float32"},
            )
        _dump(tower / "preprocessor_config.json", _preprocessor(spec))
    _dump(directory / "generation_config.json", gen)
    _dump(directory / "tokenizer_config.json", tok_cfg)
    _dump(directory / "special_tokens_map.json", special_map)
