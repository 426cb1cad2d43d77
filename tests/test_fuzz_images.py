"""Fuzz target "images": the image loader, both fits and the report's thumbnail on hostile bytes.

Random bytes, and bit-flipped or truncated real images of every supported format (JPEG, PNG, WebP, GIF,
BMP, TIFF, made here in memory in several modes), go through ``load_image`` + ``fit_image`` ("crop" and
"pad") + ``thumbnail_data_uri``, and through the report's thumbnail path (``render_report`` on a row that
names such a file). The property: every call returns normally or raises a documented ``EdgeJudgeError``
(``InvalidImageError`` for bad bytes), fast. Examples use a 1 MP pixel limit so that a flipped size field
cannot make one example allocate hundreds of MB (the default 64 MP limit is the same code with another
number; tests/test_hardening_images.py measures memory at that limit).

Also a report target: rows of arbitrary JSON values through ``render_report`` never raise, and no row value
reaches the page as markup (the page holds exactly one ``<script``, its own).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from _support import only_documented
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgejudge.errors import EdgeJudgeError, InvalidImageError
from edgejudge.images import fit_image, load_image, thumbnail_data_uri
from edgejudge.report import render_report

LIMIT = 1_000_000


def _make(fmt: str, mode: str, size: tuple[int, int], **options: object) -> bytes:
    rng = np.random.default_rng(len(fmt) * 31 + len(mode) + size[0])
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (size[1], size[0]), dtype=np.uint16))
    elif mode == "P":
        img = rgb.quantize(16)
    else:
        img = rgb.convert(mode)
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


SEEDS: list[bytes] = [
    _make("JPEG", "RGB", (24, 16), quality=80),
    _make("JPEG", "L", (16, 24)),
    _make("JPEG", "CMYK", (12, 12)),
    _make("JPEG", "RGB", (20, 12), progressive=True),
    _make("PNG", "RGB", (20, 14)),
    _make("PNG", "RGBA", (14, 20)),
    _make("PNG", "P", (16, 16), transparency=0),
    _make("PNG", "L", (9, 30)),
    _make("PNG", "LA", (12, 10)),
    _make("PNG", "1", (17, 5)),
    _make("PNG", "I;16", (10, 10)),
    _make("WEBP", "RGB", (18, 12), quality=70),
    _make("WEBP", "RGBA", (12, 18), lossless=True),
    _make("GIF", "P", (16, 12)),
    _make("GIF", "L", (10, 20)),
    _make("BMP", "RGB", (13, 9)),
    _make("BMP", "P", (9, 13)),
    _make("BMP", "1", (15, 4)),
    _make("TIFF", "RGB", (12, 12)),
    _make("TIFF", "CMYK", (8, 8)),
    _make("TIFF", "I;16", (10, 6)),
    _make("TIFF", "RGBA", (6, 10), compression="tiff_lzw"),
    _make("TIFF", "L", (11, 7), compression="tiff_adobe_deflate"),
]


def _pipeline(data: bytes, size: int, mode: str) -> None:
    img = load_image(data, name="fuzz.img", max_pixels=LIMIT)
    assert img.mode == "RGB" and img.width * img.height <= LIMIT
    out = fit_image(img, size, mode)
    assert out.size == (size, size) and out.mode == "RGB"
    assert thumbnail_data_uri(out, 32).startswith("data:image/jpeg;base64,")


def _check(data: bytes, size: int, mode: str) -> None:
    result = only_documented(_pipeline, data, size, mode)
    if isinstance(result, EdgeJudgeError):
        assert isinstance(result, InvalidImageError), result
        assert result.hint


@given(data=st.binary(max_size=4096), size=st.integers(1, 48), mode=st.sampled_from(["crop", "pad"]))
def test_random_bytes(data: bytes, size: int, mode: str) -> None:
    _check(data, size, mode)


@given(
    seed=st.sampled_from(SEEDS),
    flips=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 7)), min_size=1, max_size=8),
    size=st.integers(1, 48),
    mode=st.sampled_from(["crop", "pad"]),
)
def test_bit_flipped_real_images(seed: bytes, flips: list[tuple[int, int]], size: int, mode: str) -> None:
    data = bytearray(seed)
    for position, bit in flips:
        data[position % len(data)] ^= 1 << bit
    _check(bytes(data), size, mode)


@given(seed=st.sampled_from(SEEDS), keep=st.floats(0.0, 1.0), size=st.integers(1, 48))
def test_truncated_real_images(seed: bytes, keep: float, size: int) -> None:
    _check(seed[: int(len(seed) * keep)], size, "crop")


@given(
    seed=st.sampled_from(SEEDS),
    patch=st.tuples(st.integers(0, 64), st.binary(min_size=1, max_size=8)),
    size=st.integers(1, 48),
)
def test_header_overwrites(seed: bytes, patch: tuple[int, bytes], size: int) -> None:
    """Size, mode and offset fields live in the first bytes: overwrite a few of them."""
    at, chunk = patch
    data = bytearray(seed)
    data[at : at + len(chunk)] = chunk
    _check(bytes(data), size, "pad")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.sampled_from(SEEDS),
    flips=st.lists(st.integers(0, 1 << 16), max_size=4),
    image_size=st.one_of(st.integers(-(10**15), 10**15), st.text(max_size=5), st.none(), st.booleans()),
)
def test_report_thumbnails(tmp_path: Path, seed: bytes, flips: list[int], image_size: object) -> None:
    data = bytearray(seed)
    for position in flips:
        data[position % len(data)] ^= 0x10
    (tmp_path / "img.bin").write_bytes(bytes(data))
    row = {"id": "r", "status": "ok", "score": 3, "image": "img.bin", "image_size": image_size}
    page, summary = only_documented(render_report, [row], results_dir=tmp_path)
    assert summary.rows == 1 and page.count("<script") == 1


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(codec=None), max_size=40),  # lone surrogates included
    st.sampled_from(["<script>alert(1)</script>", "</textarea><script>", '"><img src=x onerror=a()>', "ok"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_KEYS = st.sampled_from(
    ["id", "status", "score", "score_probs", "expected_score", "feedback", "error", "hint", "image",
     "image_path", "image_size", "image_fit", "instruction", "response", "reference", "rubric", "criteria",
     "model", "line"]
)  # fmt: skip
_ROWS = st.lists(
    st.one_of(st.dictionaries(_KEYS, _VALUES, max_size=12), _VALUES),
    max_size=6,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_ROWS)
def test_report_rows_never_raise_and_stay_escaped(tmp_path: Path, rows: list[object]) -> None:
    page, summary = only_documented(render_report, rows, results_dir=tmp_path, title="<script>t</script>")
    assert summary.rows + summary.skipped == len(rows)
    assert len(re.findall(r"<script", page, flags=re.IGNORECASE)) == 1  # the page's own
    assert "onerror=a()>" not in page
    page.encode("utf-8")  # no lone surrogate left in the page
