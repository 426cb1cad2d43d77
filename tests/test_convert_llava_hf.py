"""``edgejudge convert --to llava-hf`` on the tiny checkpoint, checked against transformers (torch CPU).

The export is loaded with transformers' ``LlavaForConditionalGeneration`` / ``AutoProcessor`` /
``AutoTokenizer`` and compared with an independent reference computed in numpy from the ORIGINAL
checkpoint's weights (``edgejudge.fixtures.reference``: CLIP ``hidden_states[-2]`` without CLS,
Linear-GELU-Linear; a LLaMA forward on the spliced embeddings here): image features, and the logits of a
judge prompt with an image. The tokenizer must give the original SentencePiece ids (and llama.cpp's, the
local engine's) plus one ``<image>`` id; the chat template renders BOS + the raw text; the folder has the
layout vLLM reads (engines.md). transformers and torch are test-only dependencies.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from edgejudge.cli import app
from edgejudge.convert.llava_hf import export_llava_hf
from edgejudge.convert.readers import open_checkpoint
from edgejudge.errors import ConversionError
from edgejudge.fixtures.reference import image_features, text_logits
from edgejudge.fixtures.tiny import TinySpec
from edgejudge.prompt import full_conversation, render_judge_prompt
from edgejudge.rubric import builtin_rubrics

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SPEC = TinySpec()
IMAGE_ID, PAD_ID = SPEC.vocab_size, SPEC.vocab_size + 1
TEXTS = [
    "Hello world",
    "A chat between a curious user and an artificial intelligence assistant.",
    "  two leading spaces, trailing one ",
    "digits 0123456789 and 3.5, 2024",
    "line one\nline two\n\n###Feedback:",
    "[RESULT] 4",
    "unicode é ü ñ ß ° 中文 日本語 😀 (byte fallback)",
    "punctuation !?;:,.-_+=*/\\|@#$%^&~`",
    "\ttab\tseparated",
]


@pytest.fixture(scope="module")
def exported(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("llava-hf")
    events: list[tuple[str, int, int]] = []
    result = export_llava_hf(
        tiny_checkpoint, out, name="tiny", max_shard_bytes=1_000_000, progress=lambda *e: events.append(e)
    )
    assert result.folder == out / "tiny-llava-hf"
    assert len(result.shards) >= 2 and result.dtype == "BF16"
    assert (result.image_token_id, result.pad_token_id) == (IMAGE_ID, PAD_ID)
    assert events[-1] == ("tensors", result.n_tensors, result.n_tensors)
    finals = {stage: (done, total) for stage, done, total in events}
    assert finals["text model"][0] == finals["text model"][1] > 0
    assert finals["mmproj"][0] == finals["mmproj"][1] > 0
    assert finals["text model"][1] + finals["mmproj"][1] == result.source_bytes
    return result.folder


@pytest.fixture(scope="module")
def model(exported: Path) -> Any:
    loaded, info = transformers.LlavaForConditionalGeneration.from_pretrained(
        exported, dtype=torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return loaded.eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(11).integers(0, 256, (SPEC.image_size, SPEC.image_size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def judge_prompt() -> str:
    rubric = next(iter(builtin_rubrics().values()))
    prompt = render_judge_prompt("Describe the image.", "A red car next to a tree.", rubric, "A red car.")
    return full_conversation(prompt, "<image>")


def _sp(ckpt: Path) -> Any:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(ckpt / "tokenizer.model"))


def _header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(n))


# -- layout --------------------------------------------------------------------------------------------


def test_layout_is_what_vllm_reads(exported: Path, tiny_checkpoint: Path) -> None:
    files = {p.name for p in exported.iterdir()}
    for need in (
        "config.json",
        "generation_config.json",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "preprocessor_config.json",
        "processor_config.json",
        "chat_template.jinja",
    ):
        assert need in files
    assert not [n for n in files if n.startswith(".")]
    config = json.loads((exported / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"] and config["model_type"] == "llava"
    assert config["image_token_index"] == IMAGE_ID and config["pad_token_id"] == PAD_ID
    assert config["text_config"]["model_type"] == "llama"
    assert config["text_config"]["vocab_size"] == SPEC.vocab_size + 2
    assert config["vision_config"]["model_type"] == "clip_vision_model"
    assert config["vision_feature_layer"] == SPEC.select_layer
    assert config["vision_feature_select_strategy"] == "default"
    assert config["projector_hidden_act"] == "gelu"
    index = json.loads((exported / "model.safetensors.index.json").read_text())
    names = set(index["weight_map"])
    shards = set(index["weight_map"].values())
    assert shards == {n for n in files if n.endswith(".safetensors")} and len(shards) >= 2
    prefixes = (
        "language_model.model.",
        "language_model.lm_head.",
        "vision_tower.vision_model.",
        "multi_modal_projector.linear_1.",
        "multi_modal_projector.linear_2.",
    )
    assert all(n.startswith(prefixes) for n in names)
    for prefix in prefixes:
        assert any(n.startswith(prefix) for n in names), prefix
    assert not any("rotary_emb" in n or n.startswith("vision_tower.embeddings") for n in names)
    headers = {s: _header(exported / s) for s in shards}
    listed = {n for h in headers.values() for n in h if n != "__metadata__"}
    assert listed == names and all(h["__metadata__"] == {"format": "pt"} for h in headers.values())
    with open_checkpoint(tiny_checkpoint) as src:
        n_text = sum(1 for n in src.names() if n.startswith("model.layers.") and "rotary" not in n)
    assert sum(1 for n in names if n.startswith("language_model.model.layers.")) == n_text


def test_weights_are_the_originals_dtype_kept(exported: Path, tiny_checkpoint: Path) -> None:
    from safetensors import safe_open

    index = json.loads((exported / "model.safetensors.index.json").read_text())["weight_map"]
    pairs = {
        "language_model.model.layers.1.self_attn.q_proj.weight": "model.layers.1.self_attn.q_proj.weight",
        "vision_tower.vision_model.embeddings.position_embedding.weight": (
            "model.vision_tower.vision_tower.vision_model.embeddings.position_embedding.weight"
        ),
        "multi_modal_projector.linear_2.bias": "model.mm_projector.2.bias",
        "language_model.model.embed_tokens.weight": "model.embed_tokens.weight",
        "language_model.lm_head.weight": "lm_head.weight",
    }
    with open_checkpoint(tiny_checkpoint) as src:
        for new, old in pairs.items():
            with safe_open(exported / index[new], framework="pt") as fh:
                got = fh.get_tensor(new)
            assert got.dtype == torch.bfloat16
            want = np.asarray(src.load_raw(old))  # the stored BF16 bits
            bits = got.view(torch.int16).numpy().view(np.uint16)
            assert np.array_equal(bits[: want.shape[0]], want), new  # position table unshifted (no CLS trick)
            if bits.shape[0] > want.shape[0]:  # <image>, <pad>: two zero rows
                assert bits.shape[0] == want.shape[0] + 2 and not bits[want.shape[0] :].any()


# -- tokenizer, chat template, processor ---------------------------------------------------------------


def test_tokenizer_matches_sentencepiece_and_llama_cpp(
    exported: Path, tiny_checkpoint: Path, tiny_gguf: tuple[Path, Path], judge_prompt: str
) -> None:
    from tokenizers import Tokenizer

    from edgejudge.native.log import quiet_native_logs
    from edgejudge.native.model import TextModel

    sp = _sp(tiny_checkpoint)
    tok = transformers.AutoTokenizer.from_pretrained(exported)
    raw = Tokenizer.from_file(str(exported / "tokenizer.json"))  # how transformers 4.x loads it
    named = transformers.PreTrainedTokenizerFast.from_pretrained(exported)  # tokenizer_config.json's class
    assert tok.convert_tokens_to_ids(["<image>", "<pad>"]) == [IMAGE_ID, PAD_ID]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, PAD_ID)
    for text in TEXTS:
        want = [1, *sp.encode(text)]
        assert tok(text).input_ids == want, text
        assert raw.encode(text).ids == want == named(text).input_ids, text
        assert tok.decode(want[1:]) == text
    before, after = judge_prompt.split("<image>")
    want = [1, *sp.encode(before), IMAGE_ID, *sp.encode(after)]
    assert tok(judge_prompt).input_ids == want == named(judge_prompt).input_ids
    assert raw.encode(judge_prompt).ids == want
    with quiet_native_logs():
        llm = TextModel(tiny_gguf[0], n_ctx=128, n_batch=128, n_threads=1)
    try:  # the local engine tokenizes the parts around the image separately, the same way
        local = [*llm.tokenize(before, add_bos=True), IMAGE_ID, *llm.tokenize(after)]
    finally:
        llm.close()
    assert local == want


def test_chat_template_renders_bos_and_the_raw_text(exported: Path, judge_prompt: str) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(exported)
    proc = transformers.AutoProcessor.from_pretrained(exported)
    template = (exported / "chat_template.jinja").read_text()
    assert (
        tok.chat_template
        == template
        == json.loads((exported / "tokenizer_config.json").read_text())["chat_template"]
    )
    assert proc.chat_template == template
    as_string = [{"role": "user", "content": judge_prompt}]
    as_parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": judge_prompt}]}]
    for messages in (as_string, as_parts):
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert rendered == "<s>" + judge_prompt
    two = [{"role": "user", "content": "a <image>\nb"}, {"role": "assistant", "content": " c"}]
    assert tok.apply_chat_template(two, tokenize=False) == "<s>a <image>\nb c"
    ids = tok.apply_chat_template(as_string, tokenize=True, add_special_tokens=False)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert ids == tok(judge_prompt).input_ids  # one BOS, from the template


def test_processor_pixels_and_image_tokens(exported: Path, image: np.ndarray, judge_prompt: str) -> None:
    proc = transformers.AutoProcessor.from_pretrained(exported)
    inputs = proc(text=judge_prompt, images=image, return_tensors="pt")
    mean = np.asarray(proc.image_processor.image_mean)
    std = np.asarray(proc.image_processor.image_std)
    want = ((image / 255.0 - mean) / std).transpose(2, 0, 1)
    assert np.abs(inputs["pixel_values"][0].numpy() - want).max() < 1e-5
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(IMAGE_ID) == SPEC.n_patches and ids[0] == 1


# -- numerics against the original weights ------------------------------------------------------------


def _rms(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return x * cos + np.concatenate([-x[..., half:], x[..., :half]], -1) * sin


def _llama_logits(ckpt_dir: Path, x: np.ndarray) -> np.ndarray:
    """Logits of the original checkpoint's LLaMA for input embeddings ``x`` [n, hidden] (float64)."""
    with open_checkpoint(ckpt_dir) as ckpt:
        cfg = ckpt.config

        def get(name: str) -> np.ndarray:
            return ckpt.load(name).astype(np.float64)

        n, heads, kv = x.shape[0], int(cfg["num_attention_heads"]), int(cfg["num_key_value_heads"])
        hd, eps = x.shape[1] // heads, float(cfg["rms_norm_eps"])
        freqs = np.outer(np.arange(n), 1.0 / float(cfg["rope_theta"]) ** (np.arange(0, hd, 2) / hd))
        cos, sin = np.cos(np.concatenate([freqs, freqs], -1)), np.sin(np.concatenate([freqs, freqs], -1))
        mask = np.triu(np.full((n, n), -np.inf), 1)
        for i in range(int(cfg["num_hidden_layers"])):
            p = f"model.layers.{i}."
            h = _rms(x, get(p + "input_layernorm.weight"), eps)
            q, k, v = (
                (h @ get(f"{p}self_attn.{w}_proj.weight").T).reshape(n, m, hd).transpose(1, 0, 2)
                for w, m in (("q", heads), ("k", kv), ("v", kv))
            )
            q, k = _rotate(q, cos, sin), np.repeat(_rotate(k, cos, sin), heads // kv, 0)
            scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
            att = np.exp(scores - scores.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            out = (att @ np.repeat(v, heads // kv, 0)).transpose(1, 0, 2).reshape(n, -1)
            x = x + out @ get(p + "self_attn.o_proj.weight").T
            h = _rms(x, get(p + "post_attention_layernorm.weight"), eps)
            gate, up = h @ get(p + "mlp.gate_proj.weight").T, h @ get(p + "mlp.up_proj.weight").T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ get(p + "mlp.down_proj.weight").T
        return _rms(x, get("model.norm.weight"), eps) @ get("lm_head.weight").T


def test_image_features_match_the_original_weights(
    model: Any, exported: Path, tiny_checkpoint: Path, image: np.ndarray
) -> None:
    proc = transformers.AutoProcessor.from_pretrained(exported)
    pixels = proc.image_processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        got = model.get_image_features(pixel_values=pixels)
    got = (got.pooler_output if hasattr(got, "pooler_output") else got)[0]
    got = got.reshape(-1, SPEC.text_hidden).double().numpy()
    want, _cls = image_features(tiny_checkpoint, image, round_f16=False)  # hidden_states[-2], CLS dropped
    assert got.shape == want.shape == (SPEC.n_patches, SPEC.text_hidden)
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel < 1e-4, f"relative error {rel:.2e}"


def test_logits_with_an_image_match_the_original_weights(
    model: Any, exported: Path, tiny_checkpoint: Path, image: np.ndarray
) -> None:
    prompt = full_conversation("###Feedback: [RESULT] 4\nSo the overall score is", "<image>")
    proc = transformers.AutoProcessor.from_pretrained(exported)
    inputs = proc(text=prompt, images=image, return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    sp = _sp(tiny_checkpoint)
    before, after = prompt.split("<image>")
    assert ids == [1, *sp.encode(before), *[IMAGE_ID] * SPEC.n_patches, *sp.encode(after)]
    with torch.no_grad():
        got = model(**inputs).logits[0].double().numpy()
    assert got.shape == (len(ids), SPEC.vocab_size + 2)
    patches, _cls = image_features(tiny_checkpoint, image, round_f16=False)
    with open_checkpoint(tiny_checkpoint) as src:
        embed = src.load("model.embed_tokens.weight").astype(np.float64)
    start = ids.index(IMAGE_ID)
    x = np.concatenate([embed[ids[:start]], patches, embed[ids[start + SPEC.n_patches :]]])
    want = _llama_logits(tiny_checkpoint, x)
    err = np.abs(got[:, : SPEC.vocab_size] - want).max()
    assert err < 1e-3 * max(1.0, np.abs(want).max()), f"max |Δlogit| {err:.2e}"
    assert (got[:, : SPEC.vocab_size].argmax(-1) == want.argmax(-1)).all()
    assert not got[:, SPEC.vocab_size :].any()  # <image>, <pad>: zero rows of lm_head
    text_ids = [1, *sp.encode("Hello world [RESULT] 4")]  # and text alone = the reference's LLaMA
    with torch.no_grad():
        text_got = model(input_ids=torch.tensor([text_ids])).logits[0, :, : SPEC.vocab_size].double().numpy()
    assert np.abs(text_got - text_logits(tiny_checkpoint, text_ids, round_f16=False)).max() < 1e-3


def test_external_tower_and_f16_safetensors(tmp_path: Path, image: np.ndarray) -> None:
    """The tower only in the mm_vision_tower folder (a CLIPConfig), F16 safetensors shards: F16 kept."""
    from edgejudge.fixtures.tiny import make_tiny_llava

    ckpt = make_tiny_llava(
        tmp_path / "ckpt", SPEC, fmt="safetensors", dtype="f16", tower_weights="external", clip_config="clip"
    )
    result = export_llava_hf(ckpt, tmp_path / "out", name="ext")
    assert result.dtype == "F16"
    loaded, info = transformers.LlavaForConditionalGeneration.from_pretrained(
        result.folder, dtype=torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    proc = transformers.AutoProcessor.from_pretrained(result.folder)
    pixels = proc.image_processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        got = loaded.eval().get_image_features(pixel_values=pixels)
    got = (got.pooler_output if hasattr(got, "pooler_output") else got)[0].double().numpy()
    want, _cls = image_features(ckpt, image, round_f16=False)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-4


# -- the folder appears whole or not at all; clear errors ------------------------------------------------


def test_existing_folder_refused_then_replaced(tiny_checkpoint: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    first = export_llava_hf(tiny_checkpoint, models, name="m")
    stamp = first.folder / "config.json"
    with pytest.raises(ConversionError, match="already holds a model") as err:
        export_llava_hf(tiny_checkpoint, models, name="m")
    assert "overwrite" in err.value.about
    (first.folder / "extra.txt").write_text("old")
    again = export_llava_hf(tiny_checkpoint, models, name="m", overwrite=True)
    assert again.folder == first.folder and stamp.is_file() and not (again.folder / "extra.txt").exists()
    assert sorted(p.name for p in models.iterdir()) == ["m-llava-hf"]  # no hidden leftovers
    other = models / "x-llava-hf"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConversionError, match="holds no model"):
        export_llava_hf(tiny_checkpoint, models, name="x", overwrite=True)
    assert (other / "notes.txt").read_text() == "mine"


def test_bad_input_or_interrupt_leaves_nothing(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    def copy(name: str) -> Path:
        return Path(shutil.copytree(tiny_checkpoint, tmp_path / name))

    out = tmp_path / "out"
    truncated = copy("truncated")
    shard = sorted(truncated.glob("pytorch_model-*.bin"))[-1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(ConversionError, match="truncated"):
        export_llava_hf(truncated, out, name="b")
    wrong = copy("wrong-arch")
    (wrong / "config.json").write_text('{"architectures": ["BertModel"]}')
    with pytest.raises(ConversionError, match="unsupported architecture"):
        export_llava_hf(wrong, out, name="b")
    no_tok = copy("no-tokenizer")
    (no_tok / "tokenizer.model").unlink()
    with pytest.raises(ConversionError, match="no tokenizer.model"):
        export_llava_hf(no_tok, out, name="b")
    assert not out.exists()

    def interrupt(stage: str, done: int, total: int) -> None:  # Ctrl-C halfway through the tensors
        if stage == "tensors" and done == total // 2:
            raise KeyboardInterrupt

    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        export_llava_hf(tiny_checkpoint, out, name="b", progress=interrupt)
    assert list(out.iterdir()) == []  # neither the folder nor its hidden partial sibling


def test_cli_to_llava_hf(tiny_checkpoint: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    models = tmp_path / "models"
    args = ["convert", str(tiny_checkpoint), "--outdir", str(models), "--to", "llava-hf", "--name", "c"]
    done = runner.invoke(app, [*args, "--json"])
    assert done.exit_code == 0, done.stderr
    data = json.loads(done.stdout)
    assert Path(data["folder"]) == models.resolve() / "c-llava-hf" and data["image_token_id"] == IMAGE_ID
    assert "exported" in done.stderr
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and again.stderr.startswith("error: ") and "--force" in again.stderr
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0
    wrong = runner.invoke(app, [*args, "--quant", "q8_0"])
    assert wrong.exit_code == 2 and "--quant" in wrong.stderr
    unknown = runner.invoke(app, [*args[:-4], "--to", "onnx"])
    assert unknown.exit_code == 2 and "gguf or llava-hf" in unknown.stderr
