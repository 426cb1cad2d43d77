"""The real-size shapes of the fixture generator (edgejudge.fixtures.shapes, make_tiny_llava.py --shape).

Cheap checks of what a 7B/13B checkpoint would hold (configs, tokenizer, tensor plan, sizes) and that the
real converter reads and validates the 7B layout (a sparse checkpoint: real headers, holes for the data);
the block-wise filler gives exactly the one-shot values; the streaming writer's peak RSS stays bounded on
a checkpoint several times that bound (a child process, measured by wait4); and a checkpoint written by
the script converts with ``edgejudge convert``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from _support import cli, run_measured

from edgejudge.convert.hparams import plan_conversion
from edgejudge.convert.readers import open_checkpoint
from edgejudge.errors import InputError
from edgejudge.fixtures import tiny_meta
from edgejudge.fixtures.shapes import SHAPES, checkpoint_bytes, shape_spec, stored_bits
from edgejudge.fixtures.tiny_plan import PlannedTensor, TinySpec, plan_tensors, round_to

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_tiny_llava.py"

#: (shape, text hidden, layers, heads, MLP, BF16 GB of the whole checkpoint incl. CLIP-L and projector)
REAL = [("7b", 4096, 32, 32, 11008, 14.13), ("13b", 5120, 40, 40, 13824, 26.70)]


@pytest.mark.parametrize(("shape", "hidden", "layers", "heads", "ff", "gb"), REAL)
def test_real_shape_plan(shape: str, hidden: int, layers: int, heads: int, ff: int, gb: float) -> None:
    spec = shape_spec(shape)
    spec.check()
    ckpt, tower = plan_tensors(spec)
    assert tower == []  # original layout, tower weights inside the shards (as LLaVA-1.5 ships them)
    shapes = {t.name: t.shape for t in ckpt}
    assert shapes["model.embed_tokens.weight"] == (32000, hidden)
    assert shapes["lm_head.weight"] == (32000, hidden)
    assert sum(".self_attn.q_proj.weight" in n and "vision" not in n for n in shapes) == layers
    assert shapes[f"model.layers.{layers - 1}.self_attn.k_proj.weight"] == (hidden, hidden)  # no GQA
    assert shapes[f"model.layers.{layers - 1}.mlp.down_proj.weight"] == (hidden, ff)
    v = "model.vision_tower.vision_tower.vision_model."
    assert shapes[v + "embeddings.patch_embedding.weight"] == (1024, 3, 14, 14)
    assert shapes[v + "embeddings.position_embedding.weight"] == (577, 1024)  # 24x24 patches + CLS
    assert shapes[v + "encoder.layers.23.mlp.fc1.weight"] == (4096, 1024)
    assert v + "encoder.layers.24.mlp.fc1.weight" not in shapes
    assert shapes["model.mm_projector.0.weight"] == (hidden, 1024)
    assert shapes["model.mm_projector.2.weight"] == (hidden, hidden)
    assert checkpoint_bytes(spec) / 1e9 == pytest.approx(gb, abs=0.01)
    text = sum(t.numel for t in ckpt if not t.name.startswith(v) and "mm_projector" not in t.name)
    assert text / 1e9 == pytest.approx({"7b": 6.74, "13b": 13.02}[shape], abs=0.01)  # LLaMA-2's counts


def test_real_shape_config_and_tokenizer(tmp_path: Path) -> None:
    import sentencepiece as spm

    spec = shape_spec("7b")
    tiny_meta.write_metadata(tmp_path, spec, layout="original", dtype="bf16", clip_config="vision")
    cfg = json.loads((tmp_path / "config.json").read_text())
    expected = {
        "architectures": ["LlavaLlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 11008,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "mm_hidden_size": 1024,
        "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "torch_dtype": "bfloat16",
    }  # fmt: skip
    assert {k: cfg[k] for k in expected} == expected
    tower = json.loads((tmp_path / "clip-vision-tower" / "config.json").read_text())
    assert (tower["hidden_size"], tower["num_hidden_layers"], tower["num_attention_heads"]) == (1024, 24, 16)
    assert (tower["image_size"], tower["patch_size"], tower["intermediate_size"]) == (336, 14, 4096)
    sp = spm.SentencePieceProcessor(model_proto=(tmp_path / "tokenizer.model").read_bytes())
    assert sp.get_piece_size() == 32000  # the full vocabulary, no filler
    assert [sp.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert sp.piece_to_id("<0x0A>") == 13  # newline by byte fallback, as in LLaMA's vocabulary
    assert sp.encode("Feedback: [RESULT] 4\n", out_type=str)[-1] == "<0x0A>"


def _sparse_safetensors(path: Path, tensors: list[PlannedTensor]) -> None:
    """A BF16 safetensors file with the real header and a hole where the data would be (no disk used)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in tensors:
        header[t.name] = {
            "dtype": "BF16",
            "shape": list(t.shape),
            "data_offsets": [offset, offset + 2 * t.numel],
        }
        offset += 2 * t.numel
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((-len(raw)) % 8)
    with open(path, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little") + raw)
        fh.truncate(8 + len(raw) + offset)


def test_converter_plans_the_7b_layout(tmp_path: Path) -> None:
    """The converter's reader and planner accept the 7B checkpoint's names, shapes and configs."""
    spec = shape_spec("7b")
    tiny_meta.write_metadata(tmp_path, spec, layout="original", dtype="bf16", clip_config="vision")
    ckpt, _ = plan_tensors(spec)
    half = len(ckpt) // 2
    files = {"model-00001-of-00002.safetensors": ckpt[:half], "model-00002-of-00002.safetensors": ckpt[half:]}
    for fname, group in files.items():
        _sparse_safetensors(tmp_path / fname, group)
    index = {"weight_map": {t.name: f for f, g in files.items() for t in g}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with open_checkpoint(tmp_path) as opened:
        plan = plan_conversion(opened)
    t = plan.text
    assert (t.hidden_size, t.n_layers, t.n_heads, t.n_kv_heads, t.ffn_size) == (4096, 32, 32, 32, 11008)
    assert (t.vocab_size, t.context_length, t.head_dim) == (32000, 4096, 128)
    assert plan.layout == "original" and plan.tower_weights == "checkpoint"
    assert plan.keep_layers == 23  # CLIP-L runs 23 of its 24 blocks (select layer -2)


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
@pytest.mark.parametrize(
    "tensor",
    [
        PlannedTensor("w", "w", (37, 5, 3), std=0.3),
        PlannedTensor("n", "n", (101,), "ones", 0.1),
        PlannedTensor("e", "e", (1000, 64), std=0.02),
        PlannedTensor("f", "f", (64,), "inv_freq"),
    ],
    ids=lambda t: t.name,
)
def test_blockwise_values_equal_one_shot(tensor: PlannedTensor, dtype: str) -> None:
    want = round_to(tensor.values(7), dtype)
    for block in (1, 16, 999, 10**9):
        got = stored_bits(tensor, 7, dtype, block_values=block)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got.view(np.uint16), want.view(np.uint16)), block


def test_unknown_shape_names_the_choices() -> None:
    with pytest.raises(InputError, match="unknown shape '70b'") as err:
        shape_spec("70b")
    assert err.value.hint is not None and "7b" in err.value.hint
    assert set(SHAPES) >= {"tiny", "realistic", "7b", "13b"}


_MEDIUM = """
import sys
from edgejudge.fixtures.tiny import make_tiny_llava
from edgejudge.fixtures.tiny_plan import TinySpec
spec = TinySpec(text_hidden=1024, text_layers=16, text_heads=8, text_kv_heads=8, text_ff=2816,
                vocab_size=32000, context_length=512)
make_tiny_llava(sys.argv[1], spec, fmt=sys.argv[2], shards=3)
"""


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_streaming_writer_memory_is_bounded(tmp_path: Path, fmt: str) -> None:
    """~0.5 GB of weights (a 131 MB float32 embedding) written within ~one stored tensor of memory."""
    out = tmp_path / "medium"
    base = run_measured([sys.executable, "-c", "import numpy, sentencepiece, edgejudge.fixtures.tiny"])
    run = run_measured([sys.executable, "-c", _MEDIUM, str(out), fmt], timeout=300)
    assert run.returncode == 0, run.stderr
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert written > 500e6
    # the largest stored tensor is 65.5 MB (32000 x 1024 BF16); one block of values is 16 MB (+ temporaries)
    grew = run.peak_rss_mb - base.peak_rss_mb
    assert grew < 170, f"the writer grew by {grew:.0f} MB for {written / 1e6:.0f} MB of weights"


def test_script_shape_checkpoint_converts(tmp_path: Path) -> None:
    """``make_tiny_llava.py --shape tiny`` writes what ``edgejudge convert`` turns into a judge pair."""
    ckpt = tmp_path / "ckpt"
    made = run_measured([sys.executable, str(SCRIPT), str(ckpt), "--shape", "tiny", "--seed", "3"])
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == str(ckpt)
    done = run_measured(
        [*cli("convert", str(ckpt), "--outdir", str(tmp_path / "out"), "--quant", "Q8_0")], timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ckpt-Q8_0.gguf", "mmproj-ckpt-F16.gguf"]


def test_script_refuses_a_checkpoint_without_room(tmp_path: Path) -> None:
    """Not enough free disk: one clear line (sizes and the fix) before anything is written."""
    import importlib.util

    loaded = importlib.util.spec_from_file_location("make_tiny_llava", SCRIPT)
    assert loaded is not None and loaded.loader is not None
    script = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(script)
    with pytest.raises(InputError, match=r"the checkpoint needs 1000000\.0 GB and .* GB free") as err:
        script._check_room(str(tmp_path / "new" / "ckpt"), 10**15)
    assert err.value.hint is not None and "disk" in err.value.hint
    script._check_room(str(tmp_path / "new" / "ckpt"), 1000)  # room: no error
    assert not (tmp_path / "new").exists()


def test_realistic_flag_is_the_realistic_shape() -> None:
    assert shape_spec("realistic") == TinySpec.realistic()
    bad = run_measured([sys.executable, str(SCRIPT), "/nonexistent/x", "--realistic", "--shape", "7b"])
    assert bad.returncode == 2 and "--realistic is --shape realistic" in bad.stderr
