"""Torch-free checkpoint readers: exact round trips, strides, bf16 bits, validation errors, pickle safety."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers.pickles import with_entries, write_shard

from edgejudge.convert.readers import bf16_to_f32, open_checkpoint, open_tensor_dir
from edgejudge.convert.torchzip import StoredTensor, torch_pickle, write_torch_zip
from edgejudge.errors import ConversionError, UnsafePickleError
from edgejudge.fixtures.tiny import TOWER_DIR, TinySpec, make_tiny_llava, plan_tensors, round_to

SPEC = TinySpec()


def _stored(values: np.ndarray, dtype: str) -> np.ndarray:
    bits = round_to(values, dtype)
    return bf16_to_f32(bits) if dtype == "bf16" else bits.astype(np.float32)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    variants = {
        "bin-bf16": {"fmt": "bin", "dtype": "bf16"},
        "bin-f16": {"fmt": "bin", "dtype": "f16", "shards": 3},
        "st-bf16": {"fmt": "safetensors", "dtype": "bf16", "layout": "llava-hf"},
        "st-f16": {"fmt": "safetensors", "dtype": "f16", "tower_weights": "external"},
    }
    return {name: make_tiny_llava(root / name, SPEC, **kw) for name, kw in variants.items()}  # type: ignore[arg-type]


@pytest.mark.parametrize("variant", ["bin-bf16", "bin-f16", "st-bf16", "st-f16"])
def test_round_trip_is_exact(made: dict[str, Path], variant: str) -> None:
    path = made[variant]
    dtype = "f16" if variant.endswith("f16") and not variant.endswith("bf16") else "bf16"
    layout = "llava-hf" if variant == "st-bf16" else "original"
    tower_weights = "external" if variant == "st-f16" else "inside"
    planned, tower = plan_tensors(SPEC, layout, tower_weights)
    index_name = (
        "model.safetensors.index.json" if variant.startswith("st") else "pytorch_model.bin.index.json"
    )
    index = json.loads((path / index_name).read_text())["weight_map"]
    with open_checkpoint(path) as ckpt:
        assert ckpt.names() == list(index)  # index order
        assert sorted(ckpt.names()) == sorted(t.name for t in planned)
        assert len({ckpt.info(n).shard for n in ckpt.names()}) >= 2
        assert ckpt.config["vocab_size"] if layout == "original" else ckpt.config["text_config"]["vocab_size"]
        for t in planned:
            info = ckpt.info(t.name)
            assert info.shape == t.shape and info.dtype == dtype.upper() and info.shard == index[t.name]
            assert info.nbytes == t.numel * 2
            got = ckpt.load(t.name)
            assert got.dtype == np.float32 and got.flags.c_contiguous and got.flags.writeable
            np.testing.assert_array_equal(got, _stored(t.values(SPEC.seed), dtype))
    if tower:
        with open_tensor_dir(path / TOWER_DIR) as tower_ckpt:
            assert sorted(tower_ckpt.names()) == sorted(t.name for t in tower)
            for t in tower:
                np.testing.assert_array_equal(tower_ckpt.load(t.name), _stored(t.values(SPEC.seed), dtype))


def test_bf16_bits_widen_exactly() -> None:
    bits = np.array([0x3F80, 0xC020, 0x7F80, 0x0001, 0x8000, 0x3C00], dtype=np.uint16)
    want = np.array([1.0, -2.5, np.inf, 2.0**-133, -0.0, 2.0**-7], dtype=np.float32)
    np.testing.assert_array_equal(bf16_to_f32(bits), want)
    assert np.signbit(bf16_to_f32(bits))[4]
    # round-to-nearest-even on the way in: 1 + 2^-8 is a tie (rounds to even 1.0), 1 + 3*2^-8 rounds up
    halfway = np.array([1 + 2.0**-8, 1 + 3 * 2.0**-8, 1 + 2.0**-8 + 2.0**-20], dtype=np.float32)
    np.testing.assert_array_equal(bf16_to_f32(round_to(halfway, "bf16")), [1.0, 1 + 2.0**-6, 1 + 2.0**-7])


def _single_bin(
    directory: Path,
    tensors: list[StoredTensor],
    storages: dict,
    data: dict,
    pickle_bytes: bytes | None = None,
) -> Path:
    """A checkpoint of one torch zip; ``pickle_bytes`` replaces the generated ``data.pkl`` (the tests' own
    writer: the package writes plain state dicts only)."""
    directory.mkdir()
    (directory / "config.json").write_text("{}")
    if pickle_bytes is None:
        write_torch_zip(directory / "pytorch_model.bin", tensors, storages, lambda k: data[k])
    else:
        write_shard(directory / "pytorch_model.bin", pickle_bytes, {key: data[key] for key in storages})
    return directory


@pytest.mark.parametrize("dtype", ["BF16", "F16", "F32"])
def test_non_contiguous_and_offset_views(tmp_path: Path, dtype: str) -> None:
    base = np.arange(48, dtype=np.float32) - 20.5
    raw = {"F32": base, "F16": base.astype(np.float16), "BF16": round_to(base, "bf16")}[dtype]
    tensors = [
        StoredTensor("plain", "0", (6, 8)),
        StoredTensor("transposed", "0", (8, 6), offset=0, stride=(1, 8)),
        StoredTensor("offset_slice", "0", (3, 4), offset=10, stride=(8, 1)),
        StoredTensor("every_other", "0", (2, 3), offset=1, stride=(24, 2)),
    ]
    ckpt_dir = _single_bin(tmp_path / "c", tensors, {"0": (dtype, 48)}, {"0": raw.tobytes()})
    full = base.reshape(6, 8)
    with open_checkpoint(ckpt_dir) as ckpt:
        np.testing.assert_array_equal(ckpt.load("plain"), full)
        np.testing.assert_array_equal(ckpt.load("transposed"), full.T)
        np.testing.assert_array_equal(ckpt.load("offset_slice"), full[1:4, 2:6])
        np.testing.assert_array_equal(ckpt.load("every_other"), base[1 + np.add.outer([0, 24], [0, 2, 4])])
        assert ckpt.load("transposed").flags.c_contiguous
        assert ckpt.info("transposed").nbytes == 48 * raw.itemsize


def test_closed_checkpoint_refuses_loads(made: dict[str, Path]) -> None:
    ckpt = open_checkpoint(made["bin-bf16"])
    kept = ckpt.load("model.norm.weight")
    ckpt.close()
    assert kept.shape == (SPEC.text_hidden,)  # loads are copies, valid after close
    with pytest.raises(ValueError, match="closed"):
        ckpt.load("model.norm.weight")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _error(path: Path) -> ConversionError:
    with pytest.raises(ConversionError) as info:
        open_checkpoint(path)
    err = info.value
    assert err.hint and "\n" not in str(err)
    return err


def test_missing_shard(made: dict[str, Path], tmp_path: Path) -> None:
    path = _copy(made["bin-bf16"], tmp_path / "c")
    (path / "pytorch_model-00002-of-00002.bin").unlink()
    assert "missing shard pytorch_model-00002-of-00002.bin" in str(_error(path))


def test_index_entry_missing_from_shard(made: dict[str, Path], tmp_path: Path) -> None:
    path = _copy(made["st-bf16"], tmp_path / "c")
    index_path = path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["language_model.model.layers.9.mlp.up_proj.weight"] = (
        "model-00001-of-00002.safetensors"
    )
    index_path.write_text(json.dumps(index))
    msg = str(_error(path))
    assert "language_model.model.layers.9.mlp.up_proj.weight" in msg and "model-00001-of-00002" in msg


@pytest.mark.parametrize("variant", ["bin-bf16", "st-f16"])
def test_truncated_shard(made: dict[str, Path], tmp_path: Path, variant: str) -> None:
    path = _copy(made[variant], tmp_path / "c")
    shard = sorted(path.glob("*-00002-of-*"))[0]
    shard.write_bytes(shard.read_bytes()[:-3000])
    assert "truncated" in str(_error(path))


def test_storage_shorter_than_declared_is_truncated(tmp_path: Path) -> None:
    tensors = [StoredTensor("w", "0", (4, 4))]
    path = _single_bin(tmp_path / "c", tensors, {"0": ("F32", 16)}, {"0": b"\0" * 40})
    assert "truncated" in str(_error(path))


def test_view_past_storage_end(tmp_path: Path) -> None:
    tensors = [StoredTensor("w", "0", (4, 4), offset=2)]
    path = _single_bin(tmp_path / "c", tensors, {"0": ("F32", 16)}, {"0": b"\0" * 64})
    assert "past the end of its storage" in str(_error(path))


def test_unknown_safetensors_dtype(made: dict[str, Path], tmp_path: Path) -> None:
    path = _copy(made["st-f16"], tmp_path / "c")
    shard = path / "model-00001-of-00002.safetensors"
    data = shard.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = data[8 : 8 + n].replace(b'"F16"', b'"F64"', 1)  # same length
    shard.write_bytes(data[:8] + header + data[8 + n :])
    assert "unsupported dtype F64" in str(_error(path))


def test_unknown_torch_storage_dtype(tmp_path: Path) -> None:
    tensors = [StoredTensor("w", "0", (2,))]
    pkl = torch_pickle(tensors, {"0": ("F32", 2)}).replace(
        b"torch\nFloatStorage\n", b"torch\nDoubleStorage\n"
    )
    path = _single_bin(tmp_path / "c", tensors, {"0": ("F32", 2)}, {"0": b"\0" * 16}, pickle_bytes=pkl)
    err = _error(path)
    assert "torch.DoubleStorage" in str(err) and not isinstance(err, UnsafePickleError)


def _safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]]) -> None:
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    head = json.dumps(header).encode()
    path.write_bytes(len(head).to_bytes(8, "little") + head + b"".join(blobs))


def test_int64_position_ids_are_skipped(tmp_path: Path) -> None:
    """Hub CLIP weight files carry int64 ``embeddings.position_ids`` buffers: accepted, never listed."""
    ids = np.arange(5, dtype="<i8")[None]
    weight = np.arange(6, dtype=np.float32)
    name = "vision_model.embeddings.position_ids"
    st = tmp_path / "st"
    st.mkdir()
    _safetensors(
        st / "model.safetensors", {name: ("I64", (1, 5), ids.tobytes()), "w": ("F32", (6,), weight.tobytes())}
    )
    tensors = [StoredTensor(name, "0", (1, 5)), StoredTensor("w", "1", (6,))]
    storages = {"0": ("I64", 5), "1": ("F32", 6)}
    pt = _single_bin(tmp_path / "pt", tensors, storages, {"0": ids.tobytes(), "1": weight.tobytes()})
    assert b"torch\nLongStorage\n" in zipfile.ZipFile(pt / "pytorch_model.bin").read("pytorch_model/data.pkl")
    (pt / "pytorch_model.bin.index.json").write_text(
        json.dumps({"weight_map": {name: "pytorch_model.bin", "w": "pytorch_model.bin"}})
    )
    for path in (st, pt):
        with open_tensor_dir(path) as ckpt:
            assert ckpt.names() == ["w"] and name not in ckpt
            assert np.array_equal(ckpt.load("w"), weight)


def test_int64_tensor_not_position_ids_is_refused(tmp_path: Path) -> None:
    st = tmp_path / "st"
    st.mkdir()
    (st / "config.json").write_text("{}")
    _safetensors(st / "model.safetensors", {"w": ("I64", (2,), b"\0" * 16)})
    assert "tensor w has unsupported dtype I64" in str(_error(st))
    tensors = [StoredTensor("w", "0", (2,))]
    pt = _single_bin(tmp_path / "pt", tensors, {"0": ("I64", 2)}, {"0": b"\0" * 16})
    assert "tensor w has unsupported dtype I64" in str(_error(pt))


def test_not_a_zip_and_corrupt_headers(tmp_path: Path) -> None:
    bad_bin = tmp_path / "b"
    bad_bin.mkdir()
    (bad_bin / "config.json").write_text("{}")
    (bad_bin / "pytorch_model.bin").write_bytes(b"\x80\x02legacy torch pickle, not a zip" * 10)
    assert "not a PyTorch zip" in str(_error(bad_bin))
    bad_st = tmp_path / "s"
    bad_st.mkdir()
    (bad_st / "config.json").write_text("{}")
    (bad_st / "model.safetensors").write_bytes((20).to_bytes(8, "little") + b"{not json at all!!!}")
    assert "corrupt safetensors header" in str(_error(bad_st))
    huge = tmp_path / "h"
    huge.mkdir()
    (huge / "config.json").write_text("{}")
    (huge / "model.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")
    assert "header" in str(_error(huge))


def test_directory_problems(tmp_path: Path, made: dict[str, Path]) -> None:
    assert "not found" in str(_error(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    assert "no weights" in str(_error(empty))
    no_config = _copy(made["bin-bf16"], tmp_path / "nc")
    (no_config / "config.json").unlink()
    assert "config.json" in str(_error(no_config))
    with open_tensor_dir(no_config) as ckpt:  # a tower dir needs no config
        assert ckpt.config == {} and "model.norm.weight" in ckpt


# ---- malicious pickles: refused, named, and nothing ran ------------------------------------------------


def _malicious_dir(tmp_path: Path, pkl: bytes) -> Path:
    tensors = [StoredTensor("model.norm.weight", "0", (4,))]
    return _single_bin(tmp_path / "evil", tensors, {"0": ("BF16", 4)}, {"0": b"\0" * 8}, pickle_bytes=pkl)


@pytest.mark.parametrize(("kind", "global_name"), [("system", "posix.system"), ("eval", "__builtin__.eval"),
                                                   ("exec", "__builtin__.exec")])  # fmt: skip
def test_malicious_reduce_refused_before_running(tmp_path: Path, kind: str, global_name: str) -> None:
    from helpers.pickles import write_malicious_shard

    marker = tmp_path / "pwned"
    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    (ckpt_dir / "config.json").write_text("{}")
    write_malicious_shard(ckpt_dir / "pytorch_model.bin", marker, kind=kind)
    with pytest.raises(UnsafePickleError) as info:
        open_checkpoint(ckpt_dir)
    assert global_name in str(info.value) and info.value.hint
    assert not marker.exists()


def test_malicious_payload_is_live_under_plain_pickle(tmp_path: Path) -> None:
    """Control: an unrestricted unpickler (torch.load-like) really runs the payload and creates the marker."""
    from helpers.pickles import write_malicious_shard

    marker = tmp_path / "pwned"
    shard = write_malicious_shard(tmp_path / "evil.bin", marker, kind="exec")
    with zipfile.ZipFile(shard) as zf:
        pkl = zf.read("evil/data.pkl")
    (tmp_path / "data.pkl").write_bytes(pkl)
    script = (
        "import pickle, sys, types\n"
        "t = types.ModuleType('torch'); u = types.ModuleType('torch._utils')\n"
        "u._rebuild_tensor_v2 = lambda *a: None; t._utils = u; t.BFloat16Storage = object\n"
        "sys.modules.update({'torch': t, 'torch._utils': u})\n"
        "class U(pickle.Unpickler):\n    def persistent_load(self, pid): return None\n"
        "U(open(sys.argv[1], 'rb')).load()\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "data.pkl")], check=True, timeout=60)
    assert marker.exists()


def test_other_opcode_routes_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    cmd = f"touch '{marker}'".encode()
    variants = {
        # protocol 0 INST opcode: calls find_class('os', 'system') then the callable
        "os.system": b"(S'" + cmd + b"'\nios\nsystem\n.",
        # STACK_GLOBAL (protocol 4) with a REDUCE
        "builtins.exec": pickle.dumps(_Call(exec, (f"open({str(marker)!r}, 'w').close()",)), protocol=4),
        # the disallowed global nested inside an otherwise valid state dict
        "shutil.copy": with_entries(
            torch_pickle([StoredTensor("model.norm.weight", "0", (4,))], {"0": ("BF16", 4)}),
            {"x": _Call(shutil.copy, (__file__, str(marker)))},
        ),
    }  # fmt: skip
    for name, pkl in variants.items():
        path = _malicious_dir(_fresh(tmp_path, name), pkl)
        with pytest.raises(UnsafePickleError, match=name.replace(".", r"\.")):
            open_checkpoint(path)
        assert not marker.exists()


def _fresh(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir()
    return path


class _Call:
    def __init__(self, func: object, args: tuple) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return (self.func, self.args)


def test_malformed_state_dicts(tmp_path: Path) -> None:
    not_a_dict = pickle.dumps([1, 2, 3], protocol=2)
    assert "not a flat state dict" in str(_error(_malicious_dir(_fresh(tmp_path, "a"), not_a_dict)))
    # _rebuild_tensor_v2 called with a non-storage: a clean error, nothing built
    bogus = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x00(K\x01K\x00K\x01\x85K\x01\x85\x89tR."
    assert "not backed by a storage" in str(_error(_malicious_dir(_fresh(tmp_path, "b"), bogus)))
    truncated_pickle = torch_pickle([StoredTensor("w", "0", (4,))], {"0": ("BF16", 4)})[:-5]
    assert "corrupt checkpoint pickle" in str(_error(_malicious_dir(_fresh(tmp_path, "c"), truncated_pickle)))
