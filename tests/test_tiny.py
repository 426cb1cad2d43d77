"""The tiny LLaVA generator (real layout, tokenizer, determinism, atomicity) and the reference forwards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from edgejudge.convert.readers import open_checkpoint, open_tensor_dir
from edgejudge.errors import ConversionError, InputError
from edgejudge.fixtures.reference import image_features, text_logits
from edgejudge.fixtures.tiny import TOWER_DIR, TinySpec, make_tiny_llava, plan_tensors

SPEC = TinySpec()


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    variants: dict[str, dict[str, str]] = {
        "original": {},
        "hf": {"layout": "llava-hf", "fmt": "safetensors"},
        "external": {"tower_weights": "external", "clip_config": "clip", "fmt": "safetensors"},
        "both": {"tower_weights": "both"},
    }
    return {name: make_tiny_llava(root / name, SPEC, **kw) for name, kw in variants.items()}  # type: ignore[arg-type]


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_original_layout_files_and_config(made: dict[str, Path]) -> None:
    path = made["original"]
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
            "generation_config.json", "pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin",
            "pytorch_model-00002-of-00002.bin", TOWER_DIR} <= names  # fmt: skip
    cfg = _json(path / "config.json")
    assert cfg["architectures"] == ["LlavaLlamaForCausalLM"] and cfg["model_type"] == "llava_llama"
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]) == (256, 2, 512)
    assert cfg["hidden_size"] % 256 == 0 and SPEC.vision_ff != SPEC.vision_hidden
    assert cfg["mm_projector_type"] == "mlp2x_gelu" and cfg["mm_vision_select_layer"] == -2
    assert cfg["mm_hidden_size"] == SPEC.vision_hidden and cfg["mm_vision_select_feature"] == "patch"
    tower = Path(cfg["mm_vision_tower"])
    assert not tower.is_absolute() and (path / tower / "config.json").is_file()
    clip = _json(path / tower / "config.json")
    assert clip["model_type"] == "clip_vision_model" and clip["hidden_act"] == "quick_gelu"
    assert (clip["hidden_size"], clip["intermediate_size"], clip["image_size"]) == (64, 128, 56)
    tok = _json(path / "tokenizer_config.json")
    assert tok["add_bos_token"] is True and tok["add_eos_token"] is False and tok["pad_token"] is None
    assert _json(path / "special_tokens_map.json")["pad_token"] == "<unk>"
    assert _json(path / "generation_config.json")["eos_token_id"] == 2
    with open_checkpoint(path) as ckpt:
        names_in = ckpt.names()
    assert sum(".rotary_emb.inv_freq" in n for n in names_in) == SPEC.text_layers
    assert "model.vision_tower.vision_tower.vision_model.pre_layrnorm.weight" in names_in
    assert "model.mm_projector.2.weight" in names_in and "lm_head.weight" in names_in


def test_tokenizer_is_llama_like(made: dict[str, Path]) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(made["original"] / "tokenizer.model"))
    assert sp.get_piece_size() == SPEC.vocab_size
    assert [sp.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert sp.is_byte(3) and sp.id_to_piece(13) == "<0x0A>" and sp.is_byte(258)
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    assert len(set(pieces)) == len(pieces)
    assert sp.encode("\n") [-1] == 13  # newline by byte fallback, as in LLaMA  # fmt: skip
    assert sp.encode("So the overall score is 4.\n[RESULT] 4", out_type=str)[-2:] == ["▁", "4"]
    for digit in "12345":
        assert digit in pieces


def test_llava_hf_layout(made: dict[str, Path]) -> None:
    path = made["hf"]
    cfg = _json(path / "config.json")
    assert cfg["architectures"] == ["LlavaForConditionalGeneration"]
    assert cfg["image_token_index"] == SPEC.vocab_size and cfg["vision_feature_layer"] == -2
    assert cfg["vision_feature_select_strategy"] == "default"
    assert (
        cfg["text_config"]["vocab_size"] == 576 and cfg["vision_config"]["hidden_size"] == SPEC.vision_hidden
    )
    assert _json(path / "added_tokens.json") == {"<image>": 512, "<pad>": 513}
    decoder = _json(path / "tokenizer_config.json")["added_tokens_decoder"]
    assert decoder["512"]["content"] == "<image>" and decoder["512"]["special"] is True
    assert (path / "model.safetensors.index.json").is_file() and not (path / TOWER_DIR).exists()
    with open_checkpoint(path) as ckpt:
        prefixes = {n.split(".")[0] for n in ckpt.names()}
        assert prefixes == {"language_model", "vision_tower", "multi_modal_projector"}
        assert ckpt.info("language_model.model.embed_tokens.weight").shape == (576, SPEC.text_hidden)
        assert "multi_modal_projector.linear_2.bias" in ckpt and "language_model.lm_head.weight" in ckpt


def test_external_and_both_tower_weights(made: dict[str, Path]) -> None:
    ext = made["external"]
    with open_checkpoint(ext) as ckpt:
        assert not any("vision" in n for n in ckpt.names())
    clip = _json(ext / TOWER_DIR / "config.json")
    assert clip["model_type"] == "clip" and clip["vision_config"]["num_hidden_layers"] == SPEC.vision_layers
    with open_tensor_dir(ext / TOWER_DIR) as tower:
        assert "vision_model.embeddings.class_embedding" in tower and "visual_projection.weight" in tower
    name = "embeddings.position_embedding.weight"
    with open_checkpoint(made["both"]) as ckpt, open_tensor_dir(made["both"] / TOWER_DIR) as tower:
        inside = ckpt.load("model.vision_tower.vision_tower.vision_model." + name)
        outside = tower.load("vision_model." + name)
    assert inside.shape == outside.shape and not np.allclose(inside, outside)


def test_deterministic_given_seed(tmp_path: Path, made: dict[str, Path]) -> None:
    again = make_tiny_llava(tmp_path / "again", SPEC)
    other = make_tiny_llava(tmp_path / "other", TinySpec(seed=1))
    for shard in ("pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "tokenizer.model"):
        assert (again / shard).read_bytes() == (made["original"] / shard).read_bytes()
    assert (other / "pytorch_model-00001-of-00002.bin").read_bytes() != (
        again / "pytorch_model-00001-of-00002.bin"
    ).read_bytes()


def test_bad_arguments_and_atomic_output(tmp_path: Path) -> None:
    tmp_path = tmp_path / "work"
    tmp_path.mkdir()
    with pytest.raises(InputError, match="vision_ff"):
        make_tiny_llava(tmp_path / "a", TinySpec(vision_ff=64))
    with pytest.raises(InputError, match="fmt"):
        make_tiny_llava(tmp_path / "a", fmt="gguf")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("keep")
    with pytest.raises(InputError, match="not an empty directory"):
        make_tiny_llava(busy)

    def boom(stage: str, done: int, total: int) -> None:
        if done > total // 2:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        make_tiny_llava(tmp_path / "partial", progress=boom)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]  # no partial dir, no temp left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    assert make_tiny_llava(empty, shards=3) == empty
    assert len(list(empty.glob("pytorch_model-*-of-00003.bin"))) == 3


def test_realistic_preset_dimensions() -> None:
    spec = TinySpec.realistic()
    spec.check()
    ckpt, _ = plan_tensors(spec)
    params = sum(t.numel for t in ckpt)
    assert 1.4e9 < params < 1.7e9  # ~1.2B text + 0.3B CLIP-L + projector
    assert spec.text_hidden % 256 == 0 and spec.n_patches == 576 and spec.vocab_size == 32000


def test_script_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    script = Path(__file__).resolve().parent.parent / "scripts" / "make_tiny_llava.py"
    loader = importlib.util.spec_from_file_location("make_tiny_llava_script", script)
    assert loader is not None and loader.loader is not None
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    assert module.main([str(tmp_path / "s"), "--format", "safetensors", "--dtype", "f16"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(tmp_path / "s") and "wrote" in out.err
    assert (tmp_path / "s" / "model.safetensors.index.json").is_file()
    assert module.main([str(tmp_path / "s")]) == 1  # exists and not empty
    assert "error:" in capsys.readouterr().err


# ---- reference forwards ---------------------------------------------------------------------------------

IDS = [1, 37, 200, 5, 13, 411, 99, 3]


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SPEC.image_size, SPEC.image_size, 3), dtype=np.uint8)


def test_text_logits_shapes_causality_and_order(made: dict[str, Path]) -> None:
    logits = text_logits(made["original"], IDS)
    assert logits.shape == (len(IDS), SPEC.vocab_size) and np.isfinite(logits).all()
    assert logits.std() > 0.1
    prefix = text_logits(made["original"], IDS[:5])
    np.testing.assert_allclose(prefix, logits[:5], atol=1e-10)  # appending tokens never changes the past
    swapped = text_logits(made["original"], [IDS[1], IDS[0], *IDS[2:]])
    assert np.abs(swapped[-1] - logits[-1]).max() > 1e-3  # positions matter (RoPE is applied)


def test_layouts_agree(made: dict[str, Path]) -> None:
    """Both layouts hold the same weights (seeded by the original name): same logits and image features."""
    base_logits = text_logits(made["original"], IDS)
    hf_logits = text_logits(made["hf"], IDS)
    assert hf_logits.shape == (len(IDS), 576)
    np.testing.assert_allclose(hf_logits[:, : SPEC.vocab_size], base_logits, atol=1e-9)
    patches, cls = image_features(made["original"], _image())
    hf_patches, hf_cls = image_features(made["hf"], _image())
    np.testing.assert_allclose(hf_patches, patches, atol=1e-9)
    np.testing.assert_allclose(hf_cls, cls, atol=1e-9)


def test_image_features(made: dict[str, Path]) -> None:
    patches, cls = image_features(made["original"], _image())
    assert patches.shape == (SPEC.n_patches, SPEC.text_hidden) and cls.shape == (SPEC.text_hidden,)
    assert np.isfinite(patches).all() and np.isfinite(cls).all()
    other, _ = image_features(made["original"], _image(1))
    assert np.abs(other - patches).max() > 1e-2
    # "both": the checkpoint's own tower wins over the tower directory's differing copy
    both, _ = image_features(made["both"], _image())
    np.testing.assert_allclose(both, patches, atol=1e-9)
    ext, _ = image_features(made["external"], _image())
    assert ext.shape == patches.shape and np.isfinite(ext).all()


def test_select_layer_is_honoured(tmp_path: Path, made: dict[str, Path]) -> None:
    """-1 runs every block, -2 one block fewer (hidden_states[-2] is the output of block n-2)."""
    base, _ = image_features(made["original"], _image())
    last = make_tiny_llava(tmp_path / "last", TinySpec(select_layer=-1))
    first = make_tiny_llava(tmp_path / "first", TinySpec(select_layer=-3))
    assert np.abs(image_features(last, _image())[0] - base).max() > 1e-2
    assert np.abs(image_features(first, _image())[0] - base).max() > 1e-2


def test_reference_input_errors(made: dict[str, Path]) -> None:
    with pytest.raises(InputError):
        image_features(made["original"], np.zeros((32, 32, 3), dtype=np.uint8))
    with pytest.raises(InputError):
        text_logits(made["original"], [SPEC.vocab_size])
    with pytest.raises(ConversionError):
        text_logits(made["original"].parent / "missing", [1])


def test_a_refused_shard_count_is_named_without_restating_the_default(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="shards must be >= 1, got 0") as caught:
        make_tiny_llava(tmp_path / "none", shards=0)
    assert caught.value.hint == "use 1 shard or more"
