"""The converter is numerically faithful: real llama.cpp + mtmd on converted tiny models vs numpy references.

Five sources (original layout as BF16 zip-pickle and as F16 safetensors, the llava-hf layout, tower
weights only in the tower directory, tower weights in both places with different values: the
checkpoint's must win) are converted once per module at F16 and run on the installed llama.cpp. Text
logits must match the numpy LLaMA forward in Hugging Face semantics; image embeddings must match the
numpy CLIP + projector forward with the CLS compensation of this runtime (``out[k] ≈ ref[k+1]``,
``out[-1] ≈ proj(CLS)`` when libmtmd puts CLS last, ``out ≈ ref`` when it puts it first). Metadata and
tensor types are read back with gguf's reader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from edgejudge.convert import STAGE_MMPROJ, STAGE_TENSORS, STAGE_TEXT, ConvertResult
from edgejudge.fixtures.reference import image_features, text_logits
from edgejudge.fixtures.tiny import TinySpec, make_tiny_llava
from edgejudge.install import convert_checkpoint  # the converter for the installed runtime (probes CLS)
from edgejudge.probe import encode_image, rel_err, runtime_cls_position

SPEC = TinySpec()
TOKENS = [1, 417, 467, 418, 389, 445, 264, 421, 431, 351, 362, 454, 13, 29, 100]
VARIANTS = {
    "bin-bf16": {"fmt": "bin", "dtype": "bf16"},
    "safetensors-f16": {"fmt": "safetensors", "dtype": "f16"},
    "llava-hf": {"fmt": "safetensors", "dtype": "bf16", "layout": "llava-hf"},
    "external-tower": {"fmt": "bin", "dtype": "bf16", "tower_weights": "external", "clip_config": "clip"},
    "tower-in-both": {"fmt": "bin", "dtype": "bf16", "tower_weights": "both"},
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, ConvertResult, list]]:
    root = tmp_path_factory.mktemp("convert")
    out: dict[str, tuple[Path, ConvertResult, list]] = {}
    for key, kwargs in VARIANTS.items():
        ckpt = make_tiny_llava(root / key, SPEC, **kwargs)
        events: list = []
        result = convert_checkpoint(
            ckpt, root / f"gguf-{key}", name="tiny", quant="F16", mmproj_quant="F16",
            progress=lambda *e, _ev=events: _ev.append(e),
        )  # fmt: skip
        out[key] = (ckpt, result, events)
    return out


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(7).integers(
        0, 256, size=(SPEC.image_size, SPEC.image_size, 3), dtype=np.uint8
    )


def _llama(path: Path) -> Any:
    from edgejudge.native.log import quiet_native_logs
    from edgejudge.native.model import TextModel

    with quiet_native_logs():
        return TextModel(path, n_ctx=128, n_batch=128, logits_all=True, n_threads=2)


def _fields(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    reader = gguf.GGUFReader(path)
    kv = {name: field.contents() for name, field in reader.fields.items()}
    tensors = {t.name: t for t in reader.tensors}
    return kv, tensors


@pytest.mark.parametrize("key", list(VARIANTS))
def test_text_logits_match_reference(converted: dict, key: str) -> None:
    ckpt, result, _ = converted[key]
    llm = _llama(result.text_model)
    try:
        llm.eval(TOKENS)
        got = llm.scores(len(TOKENS))
    finally:
        llm.close()
    want = text_logits(ckpt, TOKENS)
    assert got.shape == want.shape
    err = np.abs(got - want).max()
    assert err < 0.02, f"max |Δlogit| {err:.4f} (F16 weights; the fixture reaches ~2e-3)"
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.9


@pytest.mark.parametrize("key", list(VARIANTS))
def test_image_embeddings_match_reference(converted: dict, key: str, image: np.ndarray) -> None:
    ckpt, result, _ = converted[key]
    patches, cls = image_features(ckpt, image)
    llm = _llama(result.text_model)
    try:
        out = encode_image(llm, result.mmproj, image)
    finally:
        llm.close()
    assert out.shape == patches.shape == (SPEC.n_patches, SPEC.text_hidden)
    if result.cls_position == "last":
        assert rel_err(out[:-1], patches[1:]) < 5e-3
        assert rel_err(out[-1], cls) < 5e-3
    else:
        assert rel_err(out, patches) < 5e-3


def test_cls_position_is_this_runtimes(converted: dict) -> None:
    positions = {result.cls_position for _, result, _ in converted.values()}
    assert positions == {runtime_cls_position()}


def test_text_metadata_and_types(converted: dict) -> None:
    ckpt, result, _ = converted["bin-bf16"]
    kv, tensors = _fields(result.text_model)
    assert kv["general.architecture"] == "llama"
    assert kv["general.file_type"] == 1
    assert kv["llama.context_length"] == SPEC.context_length
    assert kv["llama.embedding_length"] == SPEC.text_hidden
    assert kv["llama.block_count"] == SPEC.text_layers
    assert kv["llama.feed_forward_length"] == SPEC.text_ff
    assert kv["llama.attention.head_count"] == SPEC.text_heads
    assert kv["llama.attention.head_count_kv"] == SPEC.text_kv_heads
    assert kv["llama.rope.dimension_count"] == SPEC.head_dim
    assert kv["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(SPEC.rms_norm_eps)
    assert kv["tokenizer.ggml.model"] == "llama"
    tokens, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    assert len(tokens) == len(set(tokens)) == len(types) == SPEC.vocab_size
    assert tokens[:3] == ["<unk>", "<s>", "</s>"] and types[:3] == [2, 3, 3]
    assert types.count(6) == 256 and tokens[3] == "<0x00>"
    assert (kv["tokenizer.ggml.bos_token_id"], kv["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert kv["tokenizer.ggml.padding_token_id"] == 0
    assert kv["tokenizer.ggml.add_bos_token"] is True and kv["tokenizer.ggml.add_eos_token"] is False
    assert not any("inv_freq" in name for name in tensors)
    assert len(tensors) == 2 + 9 * SPEC.text_layers + 1
    for name, t in tensors.items():
        want = "F32" if name.endswith("norm.weight") else "F16"
        assert t.tensor_type.name == want, name
    assert list(tensors["token_embd.weight"].shape) == [SPEC.text_hidden, SPEC.vocab_size]


def test_qk_rows_permuted(converted: dict) -> None:
    """attn_q holds HF's q_proj rows interleaved per head; attn_v is untouched."""
    from edgejudge.convert.readers import open_checkpoint

    ckpt, result, _ = converted["safetensors-f16"]
    _, tensors = _fields(result.text_model)
    hd = SPEC.head_dim
    with open_checkpoint(ckpt) as c:
        q = c.load("model.layers.0.self_attn.q_proj.weight")
        v = c.load("model.layers.0.self_attn.v_proj.weight")
    got_q = np.asarray(tensors["blk.0.attn_q.weight"].data, dtype=np.float32).reshape(q.shape)
    got_v = np.asarray(tensors["blk.0.attn_v.weight"].data, dtype=np.float32).reshape(v.shape)
    np.testing.assert_array_equal(got_v, v)
    np.testing.assert_array_equal(got_q[1], q[hd // 2])  # row 2i+1 of head 0 ← row hd/2+i, i=0
    np.testing.assert_array_equal(got_q[2], q[1])
    np.testing.assert_array_equal(got_q[hd], q[hd])  # head 1 starts with its own row 0


def test_mmproj_metadata_and_layout(converted: dict) -> None:
    from edgejudge.convert.readers import open_checkpoint

    ckpt, result, _ = converted["safetensors-f16"]
    kv, tensors = _fields(result.mmproj)
    keep = SPEC.vision_layers + SPEC.select_layer + 1
    assert kv["general.architecture"] == "clip"
    assert kv["clip.projector_type"] == "mlp"
    assert kv["clip.has_vision_encoder"] is True
    assert kv["clip.vision.block_count"] == keep
    assert kv["clip.vision.feature_layer"] == [keep]
    assert kv["clip.vision.image_size"] == SPEC.image_size
    assert kv["clip.vision.patch_size"] == SPEC.patch_size
    assert kv["clip.vision.image_mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert kv["edgejudge.clip.cls_position"] == result.cls_position
    assert "clip.use_gelu" not in kv and "clip.vision.image_grid_pinpoints" not in kv
    reader = gguf.GGUFReader(result.mmproj)
    assert reader.fields["clip.vision.block_count"].types == [gguf.GGUFValueType.UINT32]
    assert reader.fields["clip.vision.feature_layer"].types == [
        gguf.GGUFValueType.ARRAY,
        gguf.GGUFValueType.INT32,
    ]
    assert reader.fields["clip.vision.image_std"].types[-1] == gguf.GGUFValueType.FLOAT32
    assert not any(n.startswith("v.post_ln") for n in tensors)
    assert f"v.blk.{keep - 1}.ffn_up.weight" in tensors and f"v.blk.{keep}.ln1.weight" not in tensors
    assert tensors["v.class_embd"].tensor_type.name == "F32"
    assert tensors["v.patch_embd.weight"].tensor_type.name == "F16"
    assert tensors["v.blk.0.ffn_up.weight"].shape.tolist() == [SPEC.vision_hidden, SPEC.vision_ff]
    with open_checkpoint(ckpt) as c:
        pos = c.load("model.vision_tower.vision_tower.vision_model.embeddings.position_embedding.weight")
    got = np.asarray(tensors["v.position_embd.weight"].data, dtype=np.float32).reshape(pos.shape)
    want = np.concatenate([pos[1:], pos[:1]]) if result.cls_position == "last" else pos
    np.testing.assert_array_equal(got, want)


def test_llava_hf_vocab_includes_image_token(converted: dict) -> None:
    from edgejudge.fixtures.tiny import hf_vocab_rows

    _, result, _ = converted["llava-hf"]
    kv, tensors = _fields(result.text_model)
    tokens, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    rows = hf_vocab_rows(SPEC)
    assert len(tokens) == rows == list(tensors["token_embd.weight"].shape)[1]
    assert tokens[SPEC.vocab_size] == "<image>" and types[SPEC.vocab_size] == 4
    assert tokens[-1] == f"[PAD{rows - 1}]" and types[-1] == 5
    assert len(set(tokens)) == rows


def test_progress_reports_bytes_and_tensors(converted: dict) -> None:
    _, result, events = converted["bin-bf16"]
    by_stage: dict[str, list[tuple[int, int]]] = {}
    for stage, done, total in events:
        by_stage.setdefault(stage, []).append((done, total))
    assert by_stage[STAGE_TENSORS][-1] == (result.n_tensors, result.n_tensors)
    text_done, text_total = by_stage[STAGE_TEXT][-1]
    mm_done, mm_total = by_stage[STAGE_MMPROJ][-1]
    assert text_done == text_total and mm_done == mm_total
    assert text_total + mm_total == result.source_bytes
    dones = [d for d, _ in by_stage[STAGE_TENSORS]]
    assert dones == sorted(dones)
    assert result.text_model.name == "tiny-F16.gguf" and result.mmproj.name == "mmproj-tiny-F16.gguf"
    assert sorted(p.name for p in result.text_model.parent.iterdir()) == [
        "mmproj-tiny-F16.gguf",
        "tiny-F16.gguf",
    ]


def test_tower_weights_with_int64_position_ids(tmp_path: Path) -> None:
    """A hub CLIP ``model.safetensors`` keeps an int64 ``embeddings.position_ids`` buffer: skipped, and the
    mmproj is the same as without it."""
    import json
    import struct

    ckpt = make_tiny_llava(tmp_path / "ckpt", SPEC, fmt="safetensors", dtype="f16", tower_weights="external")
    plain = convert_checkpoint(ckpt, tmp_path / "plain", name="t", quant="F16", mmproj_quant="F16")
    weights = ckpt / "clip-vision-tower" / "model.safetensors"
    raw = weights.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header, data = json.loads(raw[8 : 8 + n]), raw[8 + n :]
    ids = np.arange(SPEC.n_patches + 1, dtype="<i8")[None]
    header["vision_model.embeddings.position_ids"] = {
        "dtype": "I64",
        "shape": list(ids.shape),
        "data_offsets": [len(data), len(data) + ids.nbytes],
    }
    head = json.dumps(header).encode()
    weights.write_bytes(struct.pack("<Q", len(head)) + head + data + ids.tobytes())
    result = convert_checkpoint(ckpt, tmp_path / "ids", name="t", quant="F16", mmproj_quant="F16")
    assert result.n_tensors == plain.n_tensors
    assert result.mmproj.read_bytes() == plain.mmproj.read_bytes()
