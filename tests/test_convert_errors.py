"""Bad input to the converter: each case is one clear EdgeJudgeError with a hint, and nothing is left behind.

Every test mutates a private copy of a tiny checkpoint (built once per module) and then checks that the
output directory holds no file at all (no final, no temporary, no partial output).
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.pickles import write_malicious_shard

from edgejudge.convert import convert_checkpoint
from edgejudge.errors import (
    ConversionError,
    EdgeJudgeError,
    InputError,
    ModelNotFoundError,
    UnsafePickleError,
)
from edgejudge.fixtures.tiny import TOWER_DIR, make_tiny_llava
from edgejudge.judgefile import MMPROJ_QUANTS, TEXT_QUANTS, normalize_quant


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("convert-errors")
    return {
        "bin": make_tiny_llava(root / "bin", fmt="bin"),
        "st": make_tiny_llava(root / "st", fmt="safetensors", dtype="f16"),
    }


@pytest.fixture()
def ckpt(sources: dict[str, Path], tmp_path: Path) -> Callable[[str], Path]:
    def copy(kind: str = "bin") -> Path:
        return Path(shutil.copytree(sources[kind], tmp_path / f"ckpt-{kind}"))

    return copy


def _fails(
    src: Path | str, outdir: Path, error: type[EdgeJudgeError], match: str, **kw: object
) -> EdgeJudgeError:
    kw.setdefault("quant", "Q8_0")
    kw.setdefault("cls_position", "last")
    with pytest.raises(error, match=match) as info:
        convert_checkpoint(src, outdir, name="tiny", **kw)  # type: ignore[arg-type]
    assert info.value.hint, "every error carries a hint"
    assert "\n" not in str(info.value)
    leftovers = sorted(p.name for p in outdir.iterdir()) if outdir.exists() else []
    assert leftovers == [], f"partial output left behind: {leftovers}"
    return info.value


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def _rewrite_st_header(shard: Path, edit: Callable[[dict], None]) -> None:
    raw = shard.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    new = json.dumps(header, separators=(",", ":")).encode()
    new += b" " * (n - len(new))
    assert len(new) == n, "edit must not grow the header"
    shard.write_bytes(raw[:8] + new + raw[8 + n :])


def _shard_of(ckpt: Path, tensor: str, index: str = "pytorch_model.bin.index.json") -> Path:
    return ckpt / json.loads((ckpt / index).read_text())["weight_map"][tensor]


def test_missing_shard(ckpt: Callable[[str], Path], tmp_path: Path) -> None:
    src = ckpt("bin")
    _shard_of(src, "lm_head.weight").unlink()
    _fails(src, tmp_path / "out", ConversionError, "missing shard")


def test_index_entry_missing_from_shard(ckpt: Callable[[str], Path], tmp_path: Path) -> None:
    src = ckpt("bin")
    index = src / "pytorch_model.bin.index.json"
    data = json.loads(index.read_text())
    data["weight_map"]["model.layers.9.mlp.up_proj.weight"] = next(iter(data["weight_map"].values()))
    index.write_text(json.dumps(data))
    _fails(src, tmp_path / "out", ConversionError, "listed in the index but missing")


def test_tensor_missing_from_index(ckpt: Callable[[str], Path], tmp_path: Path) -> None:
    src = ckpt("bin")
    index = src / "pytorch_model.bin.index.json"
    data = json.loads(index.read_text())
    del data["weight_map"]["model.layers.1.mlp.down_proj.weight"]
    index.write_text(json.dumps(data))
    _fails(src, tmp_path / "out", ConversionError, "down_proj")


def test_truncated_shard(ckpt: Callable[[str], Path], tmp_path: Path) -> None:
    src = ckpt("st")
    shard = _shard_of(src, "model.embed_tokens.weight", "model.safetensors.index.json")
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 4096])
    _fails(src, tmp_path / "out", ConversionError, "truncated")


def test_malicious_pickle_refused_before_running(ckpt: Callable[[str], Path], tmp_path: Path) -> None:
    src = ckpt("bin")
    marker = tmp_path / "pwned"
    write_malicious_shard(_shard_of(src, "lm_head.weight"), marker, kind="system")
    err = _fails(src, tmp_path / "out", UnsafePickleError, "system")
    assert isinstance(err, ConversionError)
    assert not marker.exists(), "the pickle's payload ran"


def test_unknown_dtype(ckpt: Callable[[str], Path], tmp_path: Path) -> None:
    src = ckpt("st")
    shard = _shard_of(src, "model.norm.weight", "model.safetensors.index.json")
    _rewrite_st_header(shard, lambda h: h["model.norm.weight"].update(dtype="I16"))
    _fails(src, tmp_path / "out", ConversionError, "unsupported dtype I16")


def test_unsupported_architecture(ckpt: Callable[[str], Path], tmp_path: Path) -> None:
    src = ckpt("bin")
    _edit_json(src / "config.json", architectures=["MistralForCausalLM"], model_type="mistral")
    err = _fails(src, tmp_path / "out", ConversionError, "unsupported architecture 'MistralForCausalLM'")
    assert "LlavaLlamaForCausalLM" in str(err) and "LlavaForConditionalGeneration" in str(err)


def test_projector_width_mismatch(ckpt: Callable[[str], Path], tmp_path: Path) -> None:
    src = ckpt("st")
    name = "model.mm_projector.2.weight"
    shard = _shard_of(src, name, "model.safetensors.index.json")
    _rewrite_st_header(shard, lambda h: h[name].update(shape=[128, 512]))
    _fails(src, tmp_path / "out", ConversionError, "projector output width 128 does not match .* 256")


def test_vision_config_missing(ckpt: Callable[[str], Path], tmp_path: Path) -> None:
    src = ckpt("bin")
    (src / TOWER_DIR / "config.json").unlink()
    _fails(src, tmp_path / "out", ConversionError, "vision config missing")


_CONFIG = "config.json"
_TOWER_CONFIG = f"{TOWER_DIR}/config.json"


@pytest.mark.parametrize(
    ("where", "change", "match"),
    [
        (_CONFIG, {"mm_projector_type": "linear"}, "mm_projector_type 'linear' is not supported"),
        (_CONFIG, {"mm_vision_select_feature": "cls_patch"}, "mm_vision_select_feature 'cls_patch' is not"),
        (_CONFIG, {"mm_patch_merge_type": "spatial_unpad"}, r"'spatial_unpad' \(LLaVA-1.6 tiling\) is not"),
        (_CONFIG, {"mm_vision_tower": "./no-such-tower"}, "vision config missing"),
        (_CONFIG, {"num_hidden_layers": 3}, "num_hidden_layers is 3 but the weights hold 2"),
        # the built-in CLIP-L/336 entry resolves offline, and its 1024 width is checked against the weights
        (
            _CONFIG,
            {"mm_vision_tower": "openai/clip-vit-large-patch14-336"},
            "projector input width 64 does not match the vision width 1024",
        ),
        (_TOWER_CONFIG, {"hidden_size": 96}, "does not match the vision width|inconsistent with the weights"),
        (_TOWER_CONFIG, {"image_size": 50}, "not a multiple of patch_size"),
        (
            _TOWER_CONFIG,
            {"patch_size": 7},
            r"inconsistent with the weights: .*patch_embedding.weight \(64, 3, 7, 7\)",
        ),
        (
            _TOWER_CONFIG,
            {"num_hidden_layers": 2},
            "inconsistent with the weights: 2 layers configured, 3 in the weights",
        ),
    ],
)
def test_bad_config_values(
    ckpt: Callable[[str], Path], tmp_path: Path, where: str, change: dict[str, object], match: str
) -> None:
    src = ckpt("bin")
    _edit_json(src / where, **change)
    _fails(src, tmp_path / "out", ConversionError, match)


def test_hub_tower_offline(ckpt: Callable[[str], Path], tmp_path: Path) -> None:
    src = ckpt("bin")
    _edit_json(src / "config.json", mm_vision_tower="someone/unknown-clip-tower")
    _fails(
        src, tmp_path / "out", ModelNotFoundError, "someone/unknown-clip-tower is not in the local hub cache"
    )


def test_hub_source_offline(tmp_path: Path) -> None:
    _fails("someone/not-downloaded-judge", tmp_path / "out", ModelNotFoundError, "not in the local hub cache")


def test_missing_local_source(tmp_path: Path) -> None:
    _fails(tmp_path / "nowhere", tmp_path / "out", ModelNotFoundError, "does not exist")


def test_outdir_not_writable(ckpt: Callable[[str], Path], tmp_path: Path) -> None:
    src = ckpt("bin")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ConversionError, match="is not writable") as info:
        convert_checkpoint(src, blocker / "out", name="tiny", cls_position="last")
    assert info.value.hint
    assert blocker.read_text() == "not a directory"


def test_not_enough_disk(
    ckpt: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = ckpt("bin")
    real = shutil.disk_usage

    def tiny_disk(path: object) -> object:
        usage = real(path)  # type: ignore[arg-type]
        return type(usage)(usage.total, usage.total - 1000, 1000)

    monkeypatch.setattr(shutil, "disk_usage", tiny_disk)
    (tmp_path / "out").mkdir()
    _fails(src, tmp_path / "out", ConversionError, "not enough disk space")


def test_interrupt_midway_leaves_nothing(ckpt: Callable[[str], Path], tmp_path: Path) -> None:
    src = ckpt("bin")
    out = tmp_path / "out"
    seen: list[str] = []

    def progress(stage: str, done: int, total: int) -> None:
        seen.append(stage)
        if stage == "mmproj" and done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(src, out, name="tiny", quant="Q4_K_M", cls_position="last", progress=progress)
    assert "text model" in seen
    assert not out.exists() or list(out.iterdir()) == []


def test_existing_outputs_untouched_on_failure(ckpt: Callable[[str], Path], tmp_path: Path) -> None:
    src = ckpt("bin")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _edit_json(src / "config.json", mm_projector_type="linear")
    with pytest.raises(ConversionError):
        convert_checkpoint(src, out, name="tiny", cls_position="last")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("value", ["q9_0", "", "Q4_K_S"])
def test_bad_quant_names(value: str) -> None:
    with pytest.raises(InputError, match="choose one of: F16, Q8_0, Q5_K_M, Q4_K_M"):
        normalize_quant(value, TEXT_QUANTS)


def test_quant_names_case_insensitive() -> None:
    assert normalize_quant("q4_k_m", TEXT_QUANTS) == "Q4_K_M"
    assert normalize_quant(" f16 ", MMPROJ_QUANTS) == "F16"
    with pytest.raises(InputError, match="F16, Q8_0"):
        normalize_quant("q4_k_m", MMPROJ_QUANTS)


def test_bad_name_and_cls_position(ckpt: Callable[[str], Path], tmp_path: Path) -> None:
    src = ckpt("bin")
    with pytest.raises(InputError, match="invalid model name"):
        convert_checkpoint(src, tmp_path / "out", name="../evil")
    with pytest.raises(InputError, match="cls_position"):
        convert_checkpoint(src, tmp_path / "out", name="tiny", cls_position="middle")
    assert not (tmp_path / "out").exists()


def test_the_cls_position_is_the_callers(ckpt: Callable[[str], Path], tmp_path: Path) -> None:
    """The converter never runs the runtime probe: the caller gives the CLS order, or a function asked once,
    after the checkpoint is read and valid (progress stage STAGE_SELFTEST around it)."""
    from edgejudge.convert import STAGE_SELFTEST

    src = ckpt("st")
    with pytest.raises(InputError, match="no cls_position given") as info:
        convert_checkpoint(src, tmp_path / "out", name="tiny", quant="F16")
    assert "edgejudge.convert_checkpoint" in (info.value.hint or "")
    assert not (tmp_path / "out").exists()
    asked: list[str] = []

    def runtime() -> str:
        asked.append("asked")
        return "last"

    _edit_json(src / "config.json", mm_projector_type="linear")  # invalid: refused before asking
    _fails(src, tmp_path / "bad", ConversionError, "linear", cls_position=runtime)
    assert asked == []
    _edit_json(src / "config.json", mm_projector_type="mlp2x_gelu")
    stages: list[tuple[str, int, int]] = []
    result = convert_checkpoint(
        src,
        tmp_path / "out",
        name="tiny",
        quant="F16",
        cls_position=runtime,
        progress=lambda stage, done, total: stages.append((stage, done, total)),
    )
    assert asked == ["asked"] and result.cls_position == "last"
    assert [s for s in stages if s[0] == STAGE_SELFTEST] == [(STAGE_SELFTEST, 0, 1), (STAGE_SELFTEST, 1, 1)]
    with pytest.raises(InputError, match="cls_position"):
        convert_checkpoint(src, tmp_path / "again", name="tiny", quant="F16", cls_position=lambda: "middle")
    assert not (tmp_path / "again").exists()


def test_values_beyond_f16_range(ckpt: Callable[[str], Path], tmp_path: Path) -> None:
    """A BF16 weight of 3.4e38 cannot be stored as F16: a clear error instead of a silent inf."""
    src = ckpt("st")
    name = "model.layers.0.mlp.up_proj.weight"
    shard = _shard_of(src, name, "model.safetensors.index.json")
    raw = bytearray(shard.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    begin = json.loads(raw[8 : 8 + n])[name]["data_offsets"][0]
    raw[8 + n + begin : 8 + n + begin + 2] = b"\x7f\x7f"  # bf16 0x7F7F ≈ 3.39e38
    shard.write_bytes(bytes(raw))
    _rewrite_st_header(shard, lambda h: h[name].update(dtype="BF16"))
    _fails(
        src, tmp_path / "out", ConversionError, f"{name} has NaN/infinity or values beyond the float16 range"
    )


def test_fast_f16_cast_matches_numpy() -> None:
    import numpy as np

    from edgejudge.convert.stream import _f32_to_f16

    rng = np.random.default_rng(0)
    src = (rng.standard_normal(10_000) * 10.0 ** rng.integers(-9, 6, 10_000)).astype(np.float32)
    src[:4] = [65504.0, 65520.0, -1e6, 6e-8]
    got = np.empty(src.shape, dtype=np.float16)
    _f32_to_f16(src, got)
    with np.errstate(over="ignore"):
        want = src.astype(np.float16)
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    wide = np.empty(src.shape, dtype=np.float16)
    with np.errstate(over="ignore"):
        _f32_to_f16(src.astype(np.float64), wide)  # not float32: the numpy fallback, same bits
    np.testing.assert_array_equal(wide.view(np.uint16), want.view(np.uint16))


def test_the_converter_says_what_cls_position_to_give(ckpt: Callable[[str], Path], tmp_path: Path) -> None:
    """Leaving cls_position unset is refused by the converter itself, so no hint of it says "leave it
    unset" (review A8): it says what to give, or which function asks the runtime."""
    src = ckpt("bin")
    for bad in (None, "middle"):
        with pytest.raises(InputError, match="cls_position") as info:
            convert_checkpoint(src, tmp_path / "out", name="tiny", quant="F16", cls_position=bad)
        hint = info.value.hint or ""
        assert "'first'" in hint and "'last'" in hint and "unset" not in hint, hint
    with pytest.raises(InputError) as info:
        convert_checkpoint(src, tmp_path / "out", name="tiny", quant="F16")
    assert "give cls_position 'first' or 'last'" in (info.value.hint or "")
    assert "edgejudge.convert_checkpoint" in (info.value.hint or "")
    assert not (tmp_path / "out").exists()
