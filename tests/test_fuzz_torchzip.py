"""Fuzz target "torchzip": random and mutated PyTorch zip-pickle shards through the reader ``convert`` uses.

Five generators, each written as ``pytorch_model.bin`` into a fresh checkpoint folder, opened with
``open_checkpoint`` and every listed tensor loaded:

- random zip archives with random members (names around ``<root>/data.pkl``, ``byteorder``,
  ``data/<key>``; random bytes; stored or deflated);
- bit flips and byte overwrites of a real small shard's ``data.pkl`` (torch's exact opcodes);
- random opcode sequences (the opcodes a state dict uses plus memo, frame, long and BUILD opcodes, with
  random arguments) after a PROTO header;
- bit flips of the whole shard file (zip headers, directory, storage bytes);
- well-formed pickles describing random views (shapes, offsets, strides, storage sizes, dtypes).

The only exceptions allowed out are documented ``EdgeJudgeError``s (``only_documented``: ConversionError,
UnsafePickleError, ...); every example is small and fast (the profile's deadline).
"""

from __future__ import annotations

import io
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path

from _support import only_documented
from helpers.pickles import write_shard
from hypothesis import given
from hypothesis import strategies as st

from edgejudge.convert.readers import open_checkpoint
from edgejudge.convert.torchzip import StoredTensor, torch_pickle, write_torch_zip

_TENSORS = [
    StoredTensor("model.norm.weight", "0", (4,)),
    StoredTensor("w.t", "1", (3, 2), stride=(1, 3)),
    StoredTensor("w.slice", "1", (2,), offset=2),
    StoredTensor("embeddings.position_ids", "2", (1, 3)),
]
_STORAGES = {"0": ("BF16", 4), "1": ("F16", 6), "2": ("I64", 3)}
_DATA = {"0": b"\x80\x3f" * 4, "1": b"\x00\x3c" * 6, "2": struct.pack("<3q", 0, 1, 2)}
_PICKLE = torch_pickle(_TENSORS, _STORAGES)


def _shard_bytes(pickle_bytes: bytes = _PICKLE) -> bytes:
    with tempfile.TemporaryDirectory(prefix="fuzz-tz-") as tmp:
        path = Path(tmp) / "pytorch_model.bin"
        write_shard(path, pickle_bytes, _DATA)
        return path.read_bytes()


_SHARD = _shard_bytes()


def _open_and_load(folder: Path) -> None:
    with open_checkpoint(folder) as ckpt:
        for name in ckpt.names():
            ckpt.info(name)
            ckpt.load(name)


def _check(shard: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-tz-") as tmp:
        folder = Path(tmp)
        (folder / "config.json").write_text("{}")
        (folder / "pytorch_model.bin").write_bytes(shard)
        only_documented(_open_and_load, folder)


def test_the_seed_shard_is_valid() -> None:
    """The unmutated shard opens and loads (so the mutations below start from a real file)."""
    with tempfile.TemporaryDirectory(prefix="fuzz-tz-") as tmp:
        folder = Path(tmp)
        (folder / "config.json").write_text("{}")
        (folder / "pytorch_model.bin").write_bytes(_SHARD)
        with open_checkpoint(folder) as ckpt:
            assert ckpt.names() == ["model.norm.weight", "w.t", "w.slice"]
            assert ckpt.load("w.t").shape == (3, 2)


_MEMBER_NAMES = st.one_of(
    st.sampled_from(
        ["archive/data.pkl", "archive/byteorder", "archive/version", "archive/data/0", "archive/data/1",
         "data.pkl", "a/b/data.pkl", "archive/data/", "other/data.pkl"]
    ),
    st.text(min_size=1, max_size=12),
)  # fmt: skip
_CONTENTS = st.one_of(
    st.binary(max_size=64),
    st.just(_PICKLE),
    st.sampled_from([b"little", b"big", b"3\n", b"\x80\x3f" * 8]),
)


@given(
    st.lists(
        st.tuples(_MEMBER_NAMES, _CONTENTS, st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])),
        max_size=6,
    )
)
def test_random_zip_archives(members: list[tuple[str, bytes, int]]) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate member names are part of the fuzzing
        for name, content, compress in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = compress
            zf.writestr(info, content)
    _check(buf.getvalue())


@given(st.lists(st.tuples(st.integers(0, len(_PICKLE) - 1), st.integers(0, 255), st.booleans()), min_size=1,
                max_size=6))  # fmt: skip
def test_mutated_pickles(edits: list[tuple[int, int, bool]]) -> None:
    data = bytearray(_PICKLE)
    for pos, value, flip in edits:
        data[pos] = data[pos] ^ (1 << (value % 8)) if flip else value
    _check(_shard_bytes(bytes(data)))


def _u32(n: int) -> bytes:
    return struct.pack("<I", n % 2**32)


_OPCODES = st.one_of(
    st.sampled_from(
        [
            b"N",
            b"(",
            b"t",
            b")",
            b"}",
            b"]",
            b"a",
            b"e",
            b"s",
            b"u",
            b"R",
            b"b",
            b"0",
            b"2",
            b"1",
            b"Q",
            b"\x85",
            b"\x86",
            b"\x87",
            b"\x88",
            b"\x89",
            b"\x93",
            b"\x94",
            b"l",
            b"d",
            b".",
            b"ccollections\nOrderedDict\n",
            b"ctorch._utils\n_rebuild_tensor_v2\n",
            b"ctorch\nBFloat16Storage\n",
            b"ctorch\nHalfStorage\n",
            b"ctorch\nLongStorage\n",
            b"cos\nsystem\n",
            b"X\x07\x00\x00\x00storage",
            b"X\x01\x00\x00\x000",
            b"X\x03\x00\x00\x00cpu",
            b"\x8c\x05torch",
            b"\x8c\x0fBFloat16Storage",
        ]
    ),
    st.integers(0, 300).map(lambda n: b"q" + bytes([n % 256])),
    st.integers(0, 300).map(lambda n: b"h" + bytes([n % 256])),
    st.integers(0, 2**32 - 1).map(lambda n: b"r" + _u32(n)),
    st.integers(0, 2**32 - 1).map(lambda n: b"j" + _u32(n)),
    st.integers(0, 255).map(lambda n: b"K" + bytes([n])),
    st.integers(0, 2**16 - 1).map(lambda n: b"M" + struct.pack("<H", n)),
    st.integers(-(2**31), 2**31 - 1).map(lambda n: b"J" + struct.pack("<i", n)),
    st.integers(0, 2**64 - 1).map(lambda n: b"\x95" + struct.pack("<Q", n)),
    st.binary(max_size=9).map(lambda b: b"\x8a" + bytes([len(b)]) + b),
    st.integers(0, 2**32 - 1).map(lambda n: b"\x8b" + _u32(n)),
    st.integers(0, 2**32 - 1).map(lambda n: b"B" + _u32(n)),
    st.integers(0, 2**32 - 1).map(lambda n: b"X" + _u32(n)),
    st.integers(0, 10**12).map(lambda n: b"p" + str(n).encode() + b"\n"),
    st.integers(0, 10**12).map(lambda n: b"g" + str(n).encode() + b"\n"),
    st.binary(max_size=4),
)


@given(st.sampled_from([2, 3, 4, 5, 6, 255]), st.lists(_OPCODES, max_size=40), st.booleans())
def test_random_opcode_sequences(protocol: int, opcodes: list[bytes], stop: bool) -> None:
    data = bytes([0x80, protocol]) + b"".join(opcodes) + (b"." if stop else b"")
    _check(_shard_bytes(data))


@given(st.lists(st.tuples(st.integers(0, len(_SHARD) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, len(_SHARD)))  # fmt: skip
def test_mutated_shard_files(edits: list[tuple[int, int]], keep: int) -> None:
    data = bytearray(_SHARD)
    for pos, value in edits:
        data[pos] = value
    _check(bytes(data[: max(keep, len(data) - 64)] if keep % 3 else data))


_DIMS = st.one_of(st.integers(-2, 6), st.sampled_from([2**20, 2**31, 2**40, 2**41, 2**62, 2**64]))


@st.composite
def _described(draw: st.DrawFn) -> tuple[list[StoredTensor], dict[str, tuple[str, int]], dict[str, bytes]]:
    """Well-formed pickles describing random views: shapes, offsets, strides, storage sizes and dtypes."""
    keys = draw(st.lists(st.sampled_from(["0", "1", "2"]), min_size=1, max_size=3, unique=True))
    storages = {
        k: (draw(st.sampled_from(["BF16", "F16", "F32", "I64"])), draw(st.one_of(st.integers(0, 12), _DIMS)))
        for k in keys
    }
    data = {k: draw(st.binary(max_size=48)) for k in keys}
    tensors = []
    for i in range(draw(st.integers(1, 3))):
        shape = tuple(draw(st.lists(_DIMS, max_size=4)))
        strides = st.lists(_DIMS, min_size=len(shape), max_size=len(shape)).map(tuple)
        stride = draw(st.one_of(st.none(), strides))
        name = draw(st.sampled_from([f"t{i}", f"t{i}.position_ids"]))
        tensors.append(StoredTensor(name, draw(st.sampled_from(keys)), shape, draw(_DIMS), stride))
    return tensors, storages, data


@given(_described())
def test_random_tensor_descriptions(
    described: tuple[list[StoredTensor], dict[str, tuple[str, int]], dict[str, bytes]],
) -> None:
    tensors, storages, data = described
    with tempfile.TemporaryDirectory(prefix="fuzz-tz-") as tmp:
        folder = Path(tmp)
        (folder / "config.json").write_text("{}")
        write_torch_zip(folder / "pytorch_model.bin", tensors, storages, lambda key: data[key])
        only_documented(_open_and_load, folder)
