"""Issue 8, images: strips fit in bounded memory and time, only six formats are ever decoded (Ghostscript
never starts), and image paths get the same regular-file checks as every other user file.

Memory is measured on child processes (``_support.run_measured``, the child's own peak RSS); the baselines
(the interpreter with edgejudge.images imported, and Pillow decoding the same file alone) are measured in
the same test.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from _support import cli, run_measured
from PIL import Image

from edgejudge.errors import InvalidImageError
from edgejudge.images import MAX_FILE_BYTES, fit_image, load_image, prepare_image, sniff_format

# -- strips: item 8 ------------------------------------------------------------------------------------


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def strip_png(path: Path, width: int, height: int, colour: int = 2) -> Path:
    """A PNG of ``width x height`` pixels written row by row (never a full image in this process): a green
    strip with a red band in the middle (colour type 2, RGB; 0 = grayscale)."""
    channels = 3 if colour == 2 else 1
    pixel = b"\x20\xc0\x20" if channels == 3 else b"\x90"
    band = b"\xd0\x20\x20" if channels == 3 else b"\x30"
    compressor = zlib.compressobj(6)
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    parts = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header)]
    idat = []
    row = b"\x00" + pixel * width
    red_row = b"\x00" + band * width
    mid0, mid1 = height * 2 // 5, height * 3 // 5
    block = 1 << 16
    for y in range(0, height, block):
        n = min(block, height - y)
        rows = [red_row if mid0 <= y + i < mid1 else row for i in range(n)] if width * n < (1 << 26) else None
        if rows is None:  # a wide strip: one row at a time
            for i in range(n):
                idat.append(compressor.compress(red_row if mid0 <= y + i < mid1 else row))
        else:
            idat.append(compressor.compress(b"".join(rows)))
    idat.append(compressor.flush())
    parts.append(_chunk(b"IDAT", b"".join(idat)))
    parts.append(_chunk(b"IEND", b""))
    path.write_bytes(b"".join(parts))
    return path


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


_BASELINE = "import edgejudge.images, PIL.Image; print('ok')"
_DECODE_ONLY = """
import sys
from PIL import Image
Image.MAX_IMAGE_PIXELS = None
img = Image.open(sys.argv[1]); img.load(); print(img.size)
"""
_FIT = """
import sys
from edgejudge.images import prepare_image
fitted = prepare_image(sys.argv[1], 336, sys.argv[2])
print(fitted.width, fitted.height, fitted.image.getpixel((168, 168)))
"""


def _peak(args: list[str], timeout: float = 240) -> tuple[float, float, str]:
    done = run_measured(args, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.peak_rss_mb, done.elapsed_s, done.stdout


@pytest.mark.parametrize("shape", [(1, 4_000_000), (4_000_000, 1), (3, 1_000_000)])
@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_strip_fits_in_bounded_memory_and_time(tmp_path: Path, shape: tuple[int, int], mode: str) -> None:
    # before: 1 x 4,000,000 in crop took 5.4 GB and 16 s (resized to 336 x 1.3 billion before the crop)
    path = strip_png(tmp_path / "strip.png", *shape)
    assert path.stat().st_size < 200_000
    baseline, _, _ = _peak(_python(_BASELINE))
    peak, seconds, out = _peak([*_python(_FIT), str(path), mode])
    assert out.split()[:2] == ["336", "336"]
    assert peak - baseline < 400, f"{peak:.0f} MB peak, {baseline:.0f} MB baseline"
    assert seconds < 30


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_64_megapixel_strip_needs_no_more_than_its_decoded_pixels(tmp_path: Path, mode: str) -> None:
    # before: MemoryError (crop) and 2.7 GB (pad) for a 250 KB file. Pillow keeps one pointer per row, so a
    # decoded 1 x 64,000,000 image is ~770 MB by itself: fitting may add O(output) to that, nothing more
    path = strip_png(tmp_path / "strip64.png", 1, 64_000_000)
    decoded, _, _ = _peak([*_python(_DECODE_ONLY), str(path)])
    peak, seconds, out = _peak([*_python(_FIT), str(path), mode])
    assert out.split()[:2] == ["336", "336"]
    assert peak - decoded < 150, f"{peak:.0f} MB peak, {decoded:.0f} MB to decode the file alone"
    assert seconds < 90


@pytest.mark.parametrize("pil_mode", ["L", "P", "RGBA", "I;16", "CMYK", "1"])
def test_strip_in_any_mode(tmp_path: Path, pil_mode: str) -> None:
    strip = Image.new("L", (2, 600_000), 90).convert(pil_mode) if pil_mode != "I;16" else None
    if strip is None:
        strip = Image.fromarray(np.full((600_000, 2), 40_000, dtype=np.uint16))
    fmt = "TIFF" if pil_mode in ("CMYK", "I;16") else "PNG"
    path = tmp_path / f"strip.{fmt.lower()}"
    strip.save(path, format=fmt)
    del strip
    baseline, _, _ = _peak(_python(_BASELINE))
    for mode in ("crop", "pad"):
        peak, seconds, out = _peak([*_python(_FIT), str(path), mode])
        assert out.split()[:2] == ["336", "336"], out
        assert peak - baseline < 400 and seconds < 30, (pil_mode, mode, peak, baseline, seconds)


def test_strip_through_the_judge_command(tmp_path: Path) -> None:
    """``edgejudge judge`` (the fake engine: no model needed) on a 1 x 4,000,000 PNG, in a child."""
    path = strip_png(tmp_path / "tall.png", 1, 4_000_000)
    code = (
        "import sys; from edgejudge.cli import _common, main; from edgejudge.judge import Judge; "
        "from edgejudge.engine.fake import FakeEngine; "
        "_common.JUDGE_FACTORY = lambda o: Judge(FakeEngine(), image_fit=o.image_fit); "
        "sys.argv = ['edgejudge', *sys.argv[1:]]; main()"
    )
    baseline, _, _ = _peak([sys.executable, "-c", "import edgejudge.cli, edgejudge.images, PIL.Image"])
    for fit in ("crop", "pad"):
        args = [sys.executable, "-c", code, "judge", str(path), "--instruction", "Q", "--response", "A"]
        peak, seconds, out = _peak([*args, "--image-fit", fit, "--json"])
        assert '"score"' in out
        assert peak - baseline < 400 and seconds < 30, (fit, peak, baseline, seconds)


def test_strip_fit_keeps_the_centre(tmp_path: Path) -> None:
    tall = load_image(strip_png(tmp_path / "t.png", 2, 200_000))
    assert fit_image(tall, 56).getpixel((28, 28)) == (0xD0, 0x20, 0x20)  # the red band in the middle
    wide = load_image(Image.new("RGB", (300_000, 2), (0x20, 0xC0, 0x20)))
    assert fit_image(wide, 56, "crop").getpixel((28, 28)) == (0x20, 0xC0, 0x20)
    assert fit_image(wide, 56, "pad").size == (56, 56)


def test_normal_images_keep_the_reference_pixels() -> None:
    """Below the strip thresholds, crop is still the full bicubic resize then the centre crop."""
    rng = np.random.default_rng(3)
    for w, h in [(640, 480), (300, 2000), (2000, 90), (13, 400)]:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        short, long = min(w, h), max(w, h)
        new_long = int(336 * long / short)
        nw, nh = (336, new_long) if w <= h else (new_long, 336)
        left, top = (nw - 336) // 2, (nh - 336) // 2
        ref = img.resize((nw, nh), Image.Resampling.BICUBIC).crop((left, top, left + 336, top + 336))
        assert fit_image(img, 336).tobytes() == ref.tobytes(), (w, h)


# -- formats: item 9 -----------------------------------------------------------------------------------

EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
    b"newpath 0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"
)


def _encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "named"),
    [
        ("photo.jpg", EPS, "PostScript/EPS"),
        ("scan.png", b"%!PS-Adobe-2.0\n%%Pages: 1\nshowpage\n", "PostScript/EPS"),
        ("picture.ppm", _encoded("PPM"), "Netpbm"),
        ("icon.png", _encoded("ICO"), "ICO"),
        ("doc.jpg", _encoded("PDF"), "PDF"),
        ("art.png", b"8BPS\x00\x01" + b"\x00" * 64, "PSD"),
        ("drawing.png", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        ("photo.heic", b"\x00\x00\x00\x18ftypheic" + b"\x00" * 32, "HEIC"),
        ("old.png", _encoded("TGA"), "TGA"),
    ],
)
def test_other_formats_are_refused_by_name(tmp_path: Path, name: str, data: bytes, named: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InvalidImageError) as info:
        load_image(path)
    assert named in str(info.value) and name in str(info.value) and info.value.hint
    assert "JPEG, PNG, WebP, GIF, BMP and TIFF" in str(info.value)


def test_unknown_bytes_say_unknown_format() -> None:
    assert sniff_format(b"hello there") == "an unsupported or unknown format"
    with pytest.raises(InvalidImageError, match=r"not an image \(an unsupported or unknown format\)"):
        load_image(b"hello there", name="notes.jpg")


def _fake_gs(tmp_path: Path) -> tuple[dict[str, str], Path]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    marker = tmp_path / "ghostscript-ran"
    gs = bindir / "gs"
    gs.write_text(f"#!/bin/sh\necho started > '{marker}'\nexit 1\n")
    gs.chmod(0o755)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}, marker


def test_postscript_never_starts_ghostscript(tmp_path: Path) -> None:
    env, marker = _fake_gs(tmp_path)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(EPS)
    # the check itself works: Pillow left to itself does start "gs" on this file
    probe = run_measured(
        [sys.executable, "-c", "import sys, PIL.Image as I; I.open(sys.argv[1]).load()", str(photo)],
        env=env,
    )
    assert probe.returncode != 0 and marker.exists()
    marker.unlink()

    code = (
        "import sys; from edgejudge.cli import _common, main; from edgejudge.judge import Judge; "
        "from edgejudge.engine.fake import FakeEngine; "
        "_common.JUDGE_FACTORY = lambda o: Judge(FakeEngine(), image_fit=o.image_fit); "
        "sys.argv = ['edgejudge', *sys.argv[1:]]; main()"
    )
    judge_args = ["judge", str(photo), "--instruction", "Q?", "--response", "A."]
    judged = run_measured([sys.executable, "-c", code, *judge_args], env=env)
    assert judged.returncode == 1 and "PostScript/EPS" in judged.stderr and "unexpected" not in judged.stderr
    rows = '{"id": "a", "image": "photo.jpg", "instruction": "Q", "response": "R"}\n'
    (tmp_path / "in.jsonl").write_text(rows)
    out = tmp_path / "out.jsonl"
    batch_args = ["batch", str(tmp_path / "in.jsonl"), "-o", str(out), "--rubric", "vqa-helpfulness"]
    batched = run_measured([sys.executable, "-c", code, *batch_args], env=env)
    assert "unexpected" not in batched.stderr, batched.stderr
    assert "PostScript/EPS" in out.read_text()  # the row's error names the format
    reported = run_measured(cli("report", str(out), "-o", str(tmp_path / "r.html")), env=env)
    assert reported.returncode == 0, reported.stderr
    assert not marker.exists(), "Ghostscript was started"


# -- file checks through _fs -------------------------------------------------------------------------


def test_special_files_are_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(InvalidImageError, match="not a regular file"):
        load_image(fifo)
    with pytest.raises(InvalidImageError, match="not a regular file"):
        load_image("/dev/zero")
    with pytest.raises(InvalidImageError, match="directory"):
        load_image(tmp_path)
    big = tmp_path / "huge.png"
    with big.open("wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(InvalidImageError, match="too large"):
        prepare_image(big, 336)


def test_odd_paths_are_image_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidImageError, match="unknown user"):
        load_image("~no-such-user-edgejudge/x.png")
    with pytest.raises(InvalidImageError, match="NUL"):
        load_image("bad\x00name.png")
    home = tmp_path / "home"
    home.mkdir()
    Image.new("RGB", (8, 8)).save(home / "x.png")
    monkeypatch.setenv("HOME", str(home))
    assert load_image("~/x.png").size == (8, 8)
