"""Fuzz target "safetensors": random safetensors files through the reader ``convert`` uses.

Each example writes one ``model.safetensors`` (8-byte header length, a JSON header built by hypothesis
with random dtype / shape / data_offsets / ``__metadata__`` values, or random header bytes, then random
data bytes) into a fresh checkpoint folder, opens it with ``open_checkpoint`` and loads every tensor it
lists. The only exceptions allowed out are documented ``EdgeJudgeError``s (``only_documented``); every
example is small and fast (the profile's deadline).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from _support import only_documented
from hypothesis import given
from hypothesis import strategies as st

from edgejudge.convert.readers import open_checkpoint

_INTS = st.one_of(
    st.integers(min_value=-4, max_value=64),
    st.sampled_from([0, 1, 2**31, 2**32, 2**40, 2**48, 2**62, 2**63, 2**64, -(2**63), 10**30]),
)
_SCALARS = st.one_of(st.none(), st.booleans(), _INTS, st.floats(allow_nan=True), st.text(max_size=8))
_ANY = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
_DTYPES = st.one_of(
    st.sampled_from(["F16", "BF16", "F32", "I64", "U8", "F64", "", "f16"]),
    _ANY,
)
_SHAPES = st.one_of(st.lists(_INTS, max_size=5), st.lists(st.just(1), min_size=60, max_size=70), _ANY)
_OFFSETS = st.one_of(
    st.tuples(_INTS, _INTS).map(list),
    st.lists(st.one_of(_INTS, st.floats(allow_nan=False, allow_infinity=False)), max_size=3),
    _ANY,
)
_ENTRY = st.one_of(
    st.fixed_dictionaries({"dtype": _DTYPES, "shape": _SHAPES, "data_offsets": _OFFSETS}),
    st.dictionaries(st.sampled_from(["dtype", "shape", "data_offsets", "x"]), _ANY, max_size=4),
    _ANY,
)
_NAMES = st.one_of(
    st.sampled_from(["w", "model.norm.weight", "embeddings.position_ids", "__metadata__", ""]),
    st.text(max_size=12),
)
_METADATA = st.one_of(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3), _ANY)


@st.composite
def _headers(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(_ANY)
    header: dict[str, Any] = draw(st.dictionaries(_NAMES, _ENTRY, max_size=4))
    if draw(st.booleans()):
        header["__metadata__"] = draw(_METADATA)
    return header


@st.composite
def _files(draw: st.DrawFn) -> bytes:
    mode = draw(st.integers(0, 9))
    if mode == 0:  # raw bytes, no structure at all
        return draw(st.binary(max_size=128))
    if mode == 1:  # random header bytes (non-UTF-8, truncated JSON, ...)
        text = draw(st.binary(max_size=64))
    else:
        text = json.dumps(draw(_headers()), allow_nan=True).encode()
    declared = len(text)
    if draw(st.integers(0, 5)) == 0:
        declared = draw(st.sampled_from([0, 1, 7, declared + 1, declared * 2, 2**23, 2**40, 2**64 - 1]))
    body = draw(st.binary(max_size=256))
    return declared.to_bytes(8, "little") + text + body


def _open_and_load(folder: Path) -> None:
    with open_checkpoint(folder) as ckpt:
        for name in ckpt.names():
            ckpt.info(name)
            ckpt.load(name)


@given(_files())
def test_random_safetensors_files(data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-st-") as tmp:
        folder = Path(tmp)
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(data)
        only_documented(_open_and_load, folder)


@given(st.lists(st.tuples(st.sampled_from(["F16", "BF16", "F32"]), st.lists(st.integers(0, 6), max_size=3)),
                min_size=1, max_size=4), st.data())  # fmt: skip
def test_mutated_valid_headers(tensors: list[tuple[str, list[int]]], data: st.DataObject) -> None:
    """Valid files with one field of one entry replaced: offsets shifted, shapes changed, dtypes swapped."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for i, (dtype, shape) in enumerate(tensors):
        size = {"F16": 2, "BF16": 2, "F32": 4}[dtype]
        n = 1
        for d in shape:
            n *= d
        header[f"t{i}"] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n * size]}
        offset += n * size
    victim = header[f"t{data.draw(st.integers(0, len(tensors) - 1))}"]
    key = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
    victim[key] = data.draw({"dtype": _DTYPES, "shape": _SHAPES, "data_offsets": _OFFSETS}[key])
    text = json.dumps(header).encode()
    raw = len(text).to_bytes(8, "little") + text + bytes(offset) + data.draw(st.binary(max_size=16))
    with tempfile.TemporaryDirectory(prefix="fuzz-st-") as tmp:
        folder = Path(tmp)
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(raw)
        only_documented(_open_and_load, folder)
