"""Image loading, conversion, safety limits and fitting; every image is made in memory."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgejudge.errors import InputError, InvalidImageError
from edgejudge.images import (
    ALPHA_BACKGROUND,
    PAD_COLOR,
    fit_image,
    load_image,
    pixel_grid,
    prepare_image,
    synthetic_image,
    thumbnail_data_uri,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def halves(width: int = 64, height: int = 32, left=RED, right=BLUE) -> Image.Image:
    img = Image.new("RGB", (width, height), left)
    img.paste(Image.new("RGB", (width - width // 2, height), right), (width // 2, 0))
    return img


def encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def close(pixel: tuple[int, ...], colour: tuple[int, int, int], tol: int = 12) -> bool:
    return all(abs(int(a) - b) <= tol for a, b in zip(pixel, colour, strict=True))


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("JPEG", {"quality": 95}),
        ("PNG", {}),
        ("WEBP", {"lossless": True}),
        ("GIF", {}),
        ("BMP", {}),
        ("TIFF", {}),
    ],
)
def test_formats(tmp_path: Path, fmt: str, options: dict[str, object]) -> None:
    path = tmp_path / f"img.{fmt.lower()}"
    path.write_bytes(encode(halves(), fmt, **options))
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (64, 32)
    assert close(img.getpixel((5, 16)), RED) and close(img.getpixel((58, 16)), BLUE)


def test_gif_first_frame() -> None:
    frames = [Image.new("RGB", (20, 20), RED), Image.new("RGB", (20, 20), BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert close(load_image(data).getpixel((10, 10)), RED, 0)


def test_exif_orientation_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: displays rotated 90° clockwise
    data = encode(halves(64, 32), "JPEG", quality=95, exif=exif.tobytes())
    img = load_image(data)
    assert img.size == (32, 64)
    assert close(img.getpixel((16, 5)), RED) and close(
        img.getpixel((16, 58)), BLUE
    )  # left half is now on top


def test_alpha_composited_on_white() -> None:
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (255, 0, 0, 128))
    img = load_image(encode(rgba, "PNG"))
    assert img.getpixel((5, 5)) == ALPHA_BACKGROUND == (255, 255, 255)
    assert img.getpixel((0, 0)) == RED
    assert close(img.getpixel((1, 0)), (255, 127, 127), 2)


def test_la_and_palette_transparency() -> None:
    la = Image.new("LA", (4, 4), (0, 0))
    la.putpixel((0, 0), (0, 255))
    img = load_image(encode(la, "PNG"))
    assert img.getpixel((3, 3)) == (255, 255, 255) and img.getpixel((0, 0)) == (0, 0, 0)
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putpixel((0, 0), 1)
    img = load_image(encode(pal, "PNG", transparency=0))
    assert img.getpixel((3, 3)) == (255, 255, 255) and img.getpixel((0, 0)) == GREEN
    opaque = load_image(encode(pal, "PNG"))
    assert opaque.getpixel((3, 3)) == (0, 0, 0) and opaque.getpixel((0, 0)) == GREEN


def test_cmyk_grayscale_and_bilevel() -> None:
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    assert close(load_image(encode(cmyk, "JPEG", quality=95)).getpixel((4, 4)), RED, 16)
    assert load_image(encode(cmyk, "TIFF")).getpixel((4, 4)) == RED
    gray = load_image(encode(Image.new("L", (8, 8), 77), "PNG"))
    assert gray.mode == "RGB" and gray.getpixel((1, 1)) == (77, 77, 77)
    assert load_image(encode(Image.new("1", (8, 8), 1), "BMP")).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    arr = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    img16 = Image.fromarray(arr)
    for data in (encode(img16, "PNG"), encode(img16, "TIFF")):
        opened = Image.open(io.BytesIO(data))
        assert opened.mode.startswith("I")
        img = load_image(data)
        assert [img.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]
    as_i = load_image(Image.fromarray(arr.astype(np.int32)))  # mode "I" holding 16-bit values
    assert as_i.getpixel((1, 0)) == (128, 128, 128)
    as_f = load_image(Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)))  # mode "F" in 0..1
    assert [as_f.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]


def test_accepts_pil_image_and_copies() -> None:
    src = halves()
    img = load_image(src)
    assert img is not src and img.tobytes() == src.tobytes()


def test_pixel_limit() -> None:
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    saved = Image.MAX_IMAGE_PIXELS
    for limit in (9_999, 1_000):  # just over (Pillow warning) and far over (Pillow error)
        with pytest.raises(InvalidImageError, match="pixel limit"):
            load_image(data, name="bomb.png", max_pixels=limit)
    assert Image.MAX_IMAGE_PIXELS == saved
    assert load_image(data, max_pixels=10_000).size == (100, 100)
    with pytest.raises(InvalidImageError, match="pixel limit"):
        load_image(Image.new("RGB", (100, 100)), max_pixels=100)


@pytest.fixture
def corrupt_files(tmp_path: Path) -> dict[str, Path]:
    png = encode(synthetic_image(64), "PNG")
    jpg = encode(synthetic_image(64), "JPEG")
    files = {
        "truncated.png": png[: len(png) // 2],
        "truncated.jpg": jpg[: len(jpg) // 2],
        "empty.png": b"",
        "notes.jpg": b"this is a text file, not a picture\n",
        "header-only.png": png[:40],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in files}


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("truncated.png", "truncated"),
        ("truncated.jpg", "truncated"),
        ("empty.png", "empty"),
        ("notes.jpg", "not an image"),
        ("header-only.png", "image"),
    ],
)
def test_corrupt_files(corrupt_files: dict[str, Path], name: str, problem: str) -> None:
    with pytest.raises(InvalidImageError) as info:
        load_image(corrupt_files[name])
    assert problem in str(info.value) and name in str(info.value)
    assert info.value.hint


def test_missing_directory_and_bytes(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="not found: .*nope.jpg") as info:
        load_image(tmp_path / "nope.jpg")
    assert isinstance(info.value, ValueError) and info.value.hint
    with pytest.raises(InvalidImageError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(InvalidImageError, match="not an image.*upload.bin"):
        load_image(b"\x00" * 100, name="upload.bin")
    with pytest.raises(InvalidImageError, match="empty"):
        prepare_image(b"", 336)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(InvalidImageError, match="not a regular file"):
        load_image(fifo)


def test_crop_matches_clip_processor_semantics() -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    # shortest side 480 → 336, long side int(336 * 640 / 480) = 448, centre crop at left (448 - 336) // 2 = 56
    expected = img.resize((448, 336), Image.Resampling.BICUBIC).crop((56, 0, 392, 336))
    assert fit_image(img, 336).tobytes() == expected.tobytes()
    tall = Image.fromarray(rng.integers(0, 256, (700, 300, 3), dtype=np.uint8))
    # 300 → 336, long int(336 * 700 / 300) = 784, top (784 - 336) // 2 = 224
    expected = tall.resize((336, 784), Image.Resampling.BICUBIC).crop((0, 224, 336, 560))
    assert fit_image(tall, 336).tobytes() == expected.tobytes()


@pytest.mark.parametrize("size", [(600, 300), (300, 900), (7, 5), (336, 336), (1, 40)])
@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_fit_sizes(size: tuple[int, int], mode: str) -> None:
    out = fit_image(Image.new("RGB", size, GREEN), 336, mode)
    assert out.size == (336, 336) and out.mode == "RGB"


def test_crop_keeps_the_centre() -> None:
    img = Image.new("RGB", (800, 400), RED)
    img.paste(Image.new("RGB", (400, 400), GREEN), (200, 0))  # middle half green
    out = fit_image(img, 336)
    assert close(out.getpixel((3, 168)), GREEN, 30) and close(out.getpixel((332, 168)), GREEN, 30)


def test_pad_colour_at_borders() -> None:
    wide = fit_image(Image.new("RGB", (600, 300), GREEN), 336, "pad")
    assert wide.getpixel((168, 2)) == PAD_COLOR == (122, 116, 104)
    assert wide.getpixel((168, 333)) == PAD_COLOR
    assert wide.getpixel((168, 168)) == GREEN and wide.getpixel((0, 168)) == GREEN
    tall = fit_image(Image.new("RGB", (100, 400), BLUE), 336, "pad")
    assert tall.getpixel((2, 168)) == PAD_COLOR and tall.getpixel((333, 168)) == PAD_COLOR
    assert tall.getpixel((168, 0)) == BLUE


def test_fit_rejects_bad_arguments() -> None:
    with pytest.raises(InputError, match="fit mode"):
        fit_image(halves(), 336, "stretch")
    with pytest.raises(InputError, match="positive"):
        fit_image(halves(), 0)


def test_prepare_image_bytes_and_hash(tmp_path: Path) -> None:
    path = tmp_path / "scene.png"
    synthetic_image(200, seed=3).crop((0, 40, 200, 160)).save(path)  # 200x120: crop and pad differ
    first = prepare_image(path, 56)
    second = prepare_image(path.read_bytes(), 56, name="scene.png")
    assert first.name == second.name == "scene.png"
    assert (first.width, first.height, first.mode) == (56, 56, "crop")
    assert len(first.rgb) == 56 * 56 * 3 and first.rgb == first.image.tobytes()
    assert first.pixels_sha256 == second.pixels_sha256 == hashlib.sha256(first.rgb).hexdigest()
    assert prepare_image(path, 56, "pad").pixels_sha256 != first.pixels_sha256
    assert prepare_image(path, 64).pixels_sha256 != first.pixels_sha256


def test_thumbnail_and_pixel_grid() -> None:
    uri = thumbnail_data_uri(Image.new("RGB", (1000, 500), BLUE), max_side=128)
    assert uri.startswith("data:image/jpeg;base64,")
    thumb = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert thumb.format == "JPEG" and thumb.size == (128, 64)
    grid = pixel_grid(halves(), cols=8, rows=4)
    assert grid.shape == (4, 8, 3) and grid.dtype == np.uint8
    assert tuple(grid[0, 0]) == RED and tuple(grid[3, 7]) == BLUE
    with pytest.raises(InputError):
        pixel_grid(halves(), 0, 4)


def test_synthetic_image_is_deterministic_and_colourful() -> None:
    a, b = synthetic_image(), synthetic_image()
    assert a.size == (336, 336) and a.mode == "RGB"
    assert a.tobytes() == b.tobytes()
    assert synthetic_image(seed=1).tobytes() != a.tobytes()
    assert synthetic_image(56).size == (56, 56) and synthetic_image(1).size == (1, 1)
    assert len(np.unique(np.asarray(a).reshape(-1, 3), axis=0)) > 50


@pytest.mark.parametrize("mode", ["crop", "pad"])
@pytest.mark.parametrize("size", [(2, 20000), (20000, 3)])
def test_extreme_strips_fit_without_a_huge_intermediate(size: tuple[int, int], mode: str) -> None:
    # crop would resize 2 x 20000 to 336 x 3,360,000 and pad would build a 20000 x 20000 canvas
    strip = Image.new("RGB", size, GREEN)
    out = fit_image(strip, 336, mode)
    assert out.size == (336, 336)
    centre = out.getpixel((168, 168))
    # crop keeps only strip pixels; pad squeezes the strip to under a pixel, blended with the pad colour
    assert centre == GREEN if mode == "crop" else centre != PAD_COLOR


@pytest.mark.parametrize("size", [(50, 4000), (4000, 50), (7, 2000)])
def test_direct_crop_path_matches_full_resize(monkeypatch: pytest.MonkeyPatch, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    full = fit_image(img, 336)  # small enough for the full resize-then-crop of the reference
    monkeypatch.setattr("edgejudge.images.fit._MAX_FIT_PIXELS", 0)  # force the direct path
    assert fit_image(img, 336).tobytes() == full.tobytes()


def test_prepare_image_errors_name_the_path_as_typed(tmp_path: Path) -> None:
    bad = tmp_path / "sub" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not a png")
    with pytest.raises(InvalidImageError) as info:
        prepare_image(bad, 56)
    assert str(bad) in str(info.value)
