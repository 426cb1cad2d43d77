"""Images in: open, validate, orient and convert to RGB (``load_image``). The one place Pillow decodes bytes.

- Formats: JPEG, PNG, WebP, GIF (first frame), BMP and TIFF, and nothing else (``ALLOWED_FORMATS``): files
  are opened with ``Image.open(..., formats=ALLOWED_FORMATS)``, so no other Pillow plugin ever looks at
  the bytes (PostScript/EPS would start Ghostscript, for one). Anything else is an ``InvalidImageError``
  naming the format, recognised from its first bytes (PostScript, PDF, SVG, ICO, PSD, JPEG 2000,
  HEIC/AVIF, Netpbm, TGA, ...) without running any decoder (``sniff_format``).
- EXIF orientation is applied (``ImageOps.exif_transpose``); a broken EXIF block is ignored.
- Colour: palette, CMYK, grayscale, 1-bit and 16-bit (``I;16``: scaled by 1/257, not clipped) become RGB;
  transparency (RGBA, LA, palette with transparency) is composited on WHITE (``ALPHA_BACKGROUND``), which
  is how people see such images in viewers and browsers and keeps dark text on transparent backgrounds
  legible (Pillow's plain ``convert("RGB")`` exposes whatever colour hides under transparent pixels, often
  black). Conversions are pointwise and run tile by tile (``to_rgb``), so they need the output plus one
  small tile.
- Safety: image files are read through ``_fs.read_regular`` (regular files only, at most ``MAX_FILE_BYTES``,
  never a hang on a FIFO or device); images over ``max_pixels`` (default 64 MP) are refused before
  decoding (decompression bombs); every decoder failure, whatever Pillow raises on corrupt data, becomes
  one ``InvalidImageError`` naming the file, with a hint (``_decode``).
- Memory: loading needs the file's bytes, the decoded image and (for modes other than RGB) its RGB copy.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .._fs import read_regular, user_path
from ..errors import ImageTooLargeError, InvalidImageError

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "MAX_FILE_BYTES",
    "ALPHA_BACKGROUND",
    "FORMAT_HINT",
    "load_image",
    "sniff_format",
    "to_rgb",
    "why",
]

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # Pillow format ids; nothing else is opened
DEFAULT_MAX_PIXELS = 64_000_000
MAX_FILE_BYTES = 512 * 2**20
ALPHA_BACKGROUND = (255, 255, 255)
#: The hint of a refused or broken image.
FORMAT_HINT = "use a JPEG, PNG, WebP, GIF, BMP or TIFF image file"

_OPEN_LOCK = threading.Lock()  # Image.MAX_IMAGE_PIXELS is process-global; only this module touches it
_TILE_PIXELS = 1 << 20  # mode conversions run on tiles of at most this many pixels


def _fail(
    name: str, problem: str, hint: str = FORMAT_HINT, kind: type[InvalidImageError] = InvalidImageError
) -> InvalidImageError:
    return kind(f"{problem}: {name}", hint=hint)


# (offset, magic, name): formats recognised from their first bytes, to say what a refused file is
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%!PS", "PostScript/EPS"),
    (0, b"\xc5\xd0\xd3\xc6", "EPS (DOS binary)"),
    (0, b"%PDF", "PDF"),
    (0, b"\x00\x00\x01\x00", "ICO (Windows icon)"),
    (0, b"\x00\x00\x02\x00", "CUR (Windows cursor)"),
    (0, b"8BPS", "PSD (Photoshop)"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000 (codestream)"),
    (0, b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (0, b"\xff\x0a", "JPEG XL (codestream)"),
    (0, b"icns", "ICNS (macOS icon)"),
    (0, b"qoif", "QOI"),
    (0, b"DDS ", "DDS"),
    (0, b"gimp xcf", "XCF (GIMP)"),
    (0, b"SIMPLE  =", "FITS"),
    (0, b"\xd7\xcd\xc6\x9a", "WMF"),
    (0, b"\x01\xda", "SGI"),
    (0, b"\x59\xa6\x6a\x95", "Sun raster"),
    (0, b"PK\x03\x04", "a ZIP archive"),
    (0, b"\x1f\x8b", "a gzip file"),
    (0, b"\x7fELF", "an executable (ELF)"),
)
_FTYP = {b"avif": "AVIF", b"avis": "AVIF", b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC",
         b"mif1": "HEIF", b"msf1": "HEIF", b"crx ": "Canon CR3 raw"}  # fmt: skip


def sniff_format(data: bytes) -> str:
    """What ``data`` looks like, from its first bytes only (nothing is decoded): a format name such as
    "PostScript/EPS" or "PDF", or "an unsupported or unknown format"."""
    head = bytes(data[:1024])
    if bytes(data[-18:]) == b"TRUEVISION-XFILE.\x00":  # before ICO/CUR: a TGA header can look like one
        return "TGA"
    for offset, magic, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    if head[4:8] == b"ftyp":
        return _FTYP.get(head[8:12], "ISO media (MP4/QuickTime/HEIF)")
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"1234567" and head[2:3] in b" \t\r\n":
        return "Netpbm (PBM/PGM/PPM/PAM)"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<?xml", b"<svg", b"<!doctype svg")) and b"<svg" in text:
        return "SVG"
    if text.startswith((b"<!doctype html", b"<html")):
        return "HTML"
    if text.startswith(b"<"):
        return "XML"
    return "an unsupported or unknown format"


def _read_source(source: str | Path | bytes, name: str | None) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "<image bytes>"
    else:
        path = user_path(source, what="image path", error=InvalidImageError)
        label = name or str(path)
        try:  # regular file, at most MAX_FILE_BYTES, O_NONBLOCK: never a hang on a FIFO or /dev/zero
            data = read_regular(
                path, label=label, what="image", max_bytes=MAX_FILE_BYTES, error=InvalidImageError
            )
        except InvalidImageError:
            if _is_dir(path):  # read_regular's fstat refused it; say so in this module's long-standing words
                raise _fail(label, "image path is a directory", "pass an image file, not a folder") from None
            raise
    if not data:
        raise _fail(label, "image file is empty", "the file has 0 bytes; re-export or re-download it")
    return data, label


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _decode(data: bytes, label: str, max_pixels: int) -> Image.Image:
    """The one place where Pillow decodes untrusted bytes: only ``ALLOWED_FORMATS``, first frame, the pixel
    limit enforced; whatever a decoder raises on corrupt data becomes ``InvalidImageError``."""
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Corrupt EXIF data" and the like: the image works or it fails
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            img = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
            img.seek(0)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _fail(
                label,
                f"image is larger than the {max_pixels:,} pixel limit",
                "downscale it first (possible bomb)",
                ImageTooLargeError,
            ) from None
        except UnidentifiedImageError:
            kind = sniff_format(data)
            if kind.startswith("an unsupported"):
                raise _fail(label, f"not an image ({kind})") from None
            raise _fail(
                label,
                f"unsupported image format {kind}; edgejudge opens JPEG, PNG, WebP, GIF, BMP and TIFF only",
                "convert it to PNG or JPEG first",
            ) from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure on untrusted bytes is a bad image
            raise _fail(label, f"cannot open image ({why(exc)})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    if img.width * img.height > max_pixels:  # belt and braces (formats that skip Pillow's check)
        problem = f"image is {img.width}x{img.height} pixels, over the {max_pixels:,} pixel limit"
        raise _fail(label, problem, kind=ImageTooLargeError)
    if img.width < 1 or img.height < 1:
        raise _fail(label, "image has no pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
    except Exception as exc:  # noqa: BLE001 - OSError, SyntaxError, ValueError, struct.error, EOFError, ...
        problem = "image is truncated" if "truncated" in str(exc).lower() else "image is corrupt"
        raise _fail(label, f"{problem} ({why(exc)})", "re-export or re-download it") from None
    return img


def why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _tiles(width: int, height: int) -> Iterator[tuple[int, int, int, int]]:
    rows = max(1, _TILE_PIXELS // width)
    cols = min(width, _TILE_PIXELS)
    for y in range(0, height, rows):
        for x in range(0, width, cols):
            yield (x, y, min(x + cols, width), min(y + rows, height))


def _scale_rule(img: Image.Image) -> str:
    """The one whole-image decision of the 16-bit/float conversion, "div257", "times255" or "clip", taken
    over tiles (the same decision as on the whole array)."""
    if img.mode.startswith("I;16"):
        return "div257"
    top: float | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN tile
        for box in _tiles(*img.size):
            m = float(np.nanmax(np.asarray(img.crop(box))))
            if m == m:  # not NaN
                top = m if top is None else max(top, m)
    if img.mode == "F":
        return "times255" if top is not None and top <= 1.0 else "clip"
    return "div257" if top is not None and top > 255 else "clip"


def _scale_16bit(img: Image.Image, rule: str) -> Image.Image:
    arr = np.asarray(img)
    if img.mode == "F":
        arr = arr * 255.0 if rule == "times255" else arr
        out = np.clip(np.nan_to_num(arr), 0, 255)
    elif rule == "div257":
        out = np.clip(arr.astype(np.float64) / 257.0, 0, 255)
    else:
        out = np.clip(arr, 0, 255)
    return Image.fromarray(np.round(out).astype(np.uint8))


_WIDE_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _convert(img: Image.Image, rule: str) -> Image.Image:
    """One tile (or a small image) to RGB; every step is pointwise."""
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in _WIDE_MODES:
        return _scale_16bit(img, rule).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, RGBX, HSV, LAB ...


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as RGB: ``img`` itself when it already is; otherwise a new image, converted tile by tile (the
    only whole-image temporary is the output)."""
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    rule = _scale_rule(img) if img.mode in _WIDE_MODES else "clip"
    if img.width * img.height <= _TILE_PIXELS:
        return _convert(img, rule)
    out = Image.new("RGB", img.size)
    for box in _tiles(*img.size):
        out.paste(_convert(img.crop(box), rule), box[:2])
    return out


def load_image(
    source: str | Path | bytes | Image.Image,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Open, validate, orient and convert an image to RGB (first frame of animations).

    ``source``: a path, the file's bytes, or an already opened PIL image (never modified; the result is a
    new image). Raises ``InvalidImageError``.
    """
    if isinstance(source, Image.Image):
        label = name or "<image>"
        if source.width * source.height > max_pixels:
            problem = f"image is {source.width}x{source.height} pixels, over the {max_pixels:,} pixel limit"
            raise _fail(label, problem, kind=ImageTooLargeError)
        return _finish(source, label, owned=False)
    data, label = _read_source(source, name)
    return _finish(_decode(data, label, max_pixels), label, owned=True)


def _finish(img: Image.Image, label: str, *, owned: bool) -> Image.Image:
    """Orient and convert; an ``owned`` image (decoded here) is oriented in place, so an RGB file costs no
    copy at all; a caller's image is never modified."""
    oriented = img
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a corrupt EXIF block is ignored, silently
            if owned:
                ImageOps.exif_transpose(img, in_place=True)
            else:
                oriented = ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make the picture unusable
        oriented = img
    try:
        rgb = to_rgb(oriented)
        rgb.load()
    except Exception as exc:  # noqa: BLE001
        raise _fail(label, f"cannot convert image mode {img.mode} to RGB ({why(exc)})") from None
    return rgb if owned or rgb is not img else img.copy()
