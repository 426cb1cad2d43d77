"""Images: open, validate, orient, convert to RGB, fit to the vision tower's input. The only PIL importer.

- Formats: JPEG, PNG, WebP, GIF (first frame), BMP and TIFF, and nothing else (``ALLOWED_FORMATS``): files
  are opened with ``Image.open(..., formats=ALLOWED_FORMATS)``, so no other Pillow plugin ever looks at
  the bytes (PostScript/EPS would start Ghostscript, for one). Anything else is an ``InvalidImageError``
  naming the format, recognised from its first bytes (PostScript, PDF, SVG, ICO, PSD, JPEG 2000,
  HEIC/AVIF, Netpbm, TGA, ...) without running any decoder.
- EXIF orientation is applied (``ImageOps.exif_transpose``); a broken EXIF block is ignored.
- Colour: palette, CMYK, grayscale, 1-bit and 16-bit (``I;16``: scaled by 1/257, not clipped) become RGB;
  transparency (RGBA, LA, palette with transparency) is composited on WHITE (``ALPHA_BACKGROUND``), which
  is how people see such images in viewers and browsers and keeps dark text on transparent backgrounds
  legible (Pillow's plain ``convert("RGB")`` exposes whatever colour hides under transparent pixels, often
  black). Conversions are pointwise and run tile by tile, so they need the output plus one small tile.
- Safety: image files are read through ``_fs.read_regular`` (regular files only, at most ``MAX_FILE_BYTES``,
  never a hang on a FIFO or device); images over ``max_pixels`` (default 64 MP) are refused before
  decoding (decompression bombs); every decoder failure, whatever Pillow raises on corrupt data, becomes
  one ``InvalidImageError`` naming the file, with a hint (``_decode``).
- Memory: loading needs the file's bytes, the decoded image and (for modes other than RGB) its RGB copy;
  fitting adds O(output) (at most ``_SMALL`` pixels or 4x the image for crop's intermediate), whatever the
  aspect ratio: a 1 x 64,000,000 strip included (Pillow itself keeps one pointer per row, so such a strip
  is ~770 MB decoded).
- Fitting (``fit_image``): ``crop`` (default) = CLIPImageProcessor as in the reference evaluation: shortest
  side → ``size`` (bicubic; long side ``int(size * long / short)``), then centre crop ``size × size``.
  ``pad`` = LLaVA's ``expand2square``: pad to a square with the CLIP mean colour ``PAD_COLOR``
  (122, 116, 104), centred, then resize to ``size × size`` (bicubic); the whole image stays visible.
  Every normal image gets exactly those pixels. Strips (only where the full-size intermediate would be
  over 16.7 MP and over 4x the image): ``crop`` runs the same two bicubic passes, horizontal then
  vertical, over only the source rows the centre box needs; Pillow takes a box's coordinates as 32-bit
  floats, so some pixels can differ from the full resize by 1 or 2 levels (none in the evenly dividing
  cases of tests/test_images.py). ``pad`` of a strip whose square canvas would be over 16.7 MP and 16x
  the image shrinks it first (long side ``8 × size``; Pillow's box ``reduce`` first when the long side is
  over 65,536 px), which differs from padding at full size by anti-aliasing only.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from ._fs import read_regular, user_path
from .errors import InputError, InvalidImageError

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "MAX_FILE_BYTES",
    "PAD_COLOR",
    "ALPHA_BACKGROUND",
    "FIT_MODES",
    "FittedImage",
    "ImageInput",
    "check_fit",
    "load_image",
    "fit_image",
    "prepare_image",
    "thumbnail_data_uri",
    "pixel_grid",
    "synthetic_image",
    "sniff_format",
]

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # Pillow format ids; nothing else is opened
DEFAULT_MAX_PIXELS = 64_000_000
MAX_FILE_BYTES = 512 * 2**20
PAD_COLOR = (122, 116, 104)  # round(255 * CLIP image mean)
ALPHA_BACKGROUND = (255, 255, 255)
FIT_MODES = ("crop", "pad")

_OPEN_LOCK = threading.Lock()  # Image.MAX_IMAGE_PIXELS is process-global; only this module touches it
_MAX_PAD_PIXELS = 8192 * 8192  # above this, "pad" shrinks the image before making the square canvas
_MAX_FIT_PIXELS = 8192 * 8192  # "crop" never resizes the whole image to more than this
_SMALL = 4096 * 4096  # a full-size intermediate (crop's resize, pad's canvas) this small is always fine
_REDUCE_ABOVE = 65_536  # long sides over this are box-reduced before a bicubic shrink (coefficient tables)
_TILE_PIXELS = 1 << 20  # mode conversions run on tiles of at most this many pixels
_HINT = "use a JPEG, PNG, WebP, GIF, BMP or TIFF image file"


@dataclass(frozen=True)
class FittedImage:
    """What the judge sees: the fitted RGB ``image``, its raw bytes (``width*height*3``, row-major RGB),
    the sha256 hex digest of those bytes, the source ``name`` and the fit ``mode`` ("crop" | "pad")."""

    image: Image.Image
    rgb: bytes
    width: int
    height: int
    sha256: str
    name: str
    mode: str


#: What the judge takes as an image: a path, the file's bytes, a PIL image or an already fitted image.
ImageInput = str | Path | bytes | Image.Image | FittedImage


def check_fit(mode: object) -> str:
    """``mode`` when it is one of ``FIT_MODES``; else ``InputError`` (the one check of a fit-mode name)."""
    if not isinstance(mode, str) or mode not in FIT_MODES:
        raise InputError(f"unknown image fit mode {mode!r}", hint=f"use one of: {', '.join(FIT_MODES)}")
    return mode


def _fail(name: str, problem: str, hint: str = _HINT) -> InvalidImageError:
    return InvalidImageError(f"{problem}: {name}", hint=hint)


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
            raise _fail(label, f"cannot open image ({_why(exc)})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    if img.width * img.height > max_pixels:  # belt and braces (formats that skip Pillow's check)
        raise _fail(label, f"image is {img.width}x{img.height} pixels, over the {max_pixels:,} pixel limit")
    if img.width < 1 or img.height < 1:
        raise _fail(label, "image has no pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
    except Exception as exc:  # noqa: BLE001 - OSError, SyntaxError, ValueError, struct.error, EOFError, ...
        problem = "image is truncated" if "truncated" in str(exc).lower() else "image is corrupt"
        raise _fail(label, f"{problem} ({_why(exc)})", "re-export or re-download it") from None
    return img


def _why(exc: BaseException) -> str:
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


def _to_rgb(img: Image.Image) -> Image.Image:
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
            raise _fail(
                label, f"image is {source.width}x{source.height} pixels, over the {max_pixels:,} pixel limit"
            )
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
        rgb = _to_rgb(oriented)
        rgb.load()
    except Exception as exc:  # noqa: BLE001
        raise _fail(label, f"cannot convert image mode {img.mode} to RGB ({_why(exc)})") from None
    return rgb if owned or rgb is not img else img.copy()


def fit_image(img: Image.Image, size: int, mode: str = "crop") -> Image.Image:
    """Fit an image to ``size × size`` RGB: ``crop`` (CLIP processor) or ``pad`` (LLaVA expand2square).

    Needs the input plus O(output) memory whatever the aspect ratio (see the module docstring)."""
    check_fit(mode)
    if size < 1:
        raise InputError(f"image size must be positive, got {size}", hint="use the vision tower's size (336)")
    try:
        img = _to_rgb(img)
    except Exception as exc:  # noqa: BLE001 - a caller's image in a mode Pillow cannot convert
        raise InvalidImageError(
            f"cannot convert image mode {img.mode} to RGB ({_why(exc)})", hint=_HINT
        ) from None
    return _pad(img, size) if mode == "pad" else _crop(img, size)


def _crop(img: Image.Image, size: int) -> Image.Image:
    width, height = img.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if width <= height else (new_long, size)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    if new_w * new_h > min(_MAX_FIT_PIXELS, max(4 * width * height, _SMALL)):
        return _crop_box(img, size, (new_w, new_h), (left, top))
    if (new_w, new_h) != (width, height):
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    return img.crop((left, top, left + size, top + size))


def _crop_box(img: Image.Image, size: int, scaled: tuple[int, int], corner: tuple[int, int]) -> Image.Image:
    """The centre crop of a strip without the full resize (1 x 4,000,000 would resize to 336 x 1.3 billion
    first): the same two passes as the full resize, horizontal then vertical, each over what the crop needs.
    The crop box is given in source pixels, so scales and sample positions are those of the full resize;
    the horizontal pass covers only the source rows the vertical pass reads (plus the filter's reach)."""
    width, height = img.size
    (new_w, new_h), (left, top) = scaled, corner
    sx, sy = width / new_w, height / new_h
    x0, x1 = left * sx, (width if left + size == new_w else min(width, (left + size) * sx))
    y0, y1 = top * sy, (height if top + size == new_h else min(height, (top + size) * sy))
    reach = 2 * max(sy, 1.0) + 4  # the bicubic support in source rows, and a margin
    r0, r1 = max(0, int(y0 - reach)), min(height, int(y1 + reach) + 1)
    band = img.crop((0, r0, width, r1)) if (r0, r1) != (0, height) else img
    rows = band.resize((size, r1 - r0), Image.Resampling.BICUBIC, box=(x0, 0, x1, r1 - r0))  # horizontal only
    return rows.resize((size, size), Image.Resampling.BICUBIC, box=(0, y0 - r0, size, y1 - r0))  # vertical


def _pad(img: Image.Image, size: int) -> Image.Image:
    width, height = img.size
    side = max(width, height)
    lopsided = width != height and side * side > max(16 * width * height, _SMALL)
    if side * side > _MAX_PAD_PIXELS or lopsided:
        # a strip would make a huge square canvas: shrink it first (aspect kept, long side 8 × size); only
        # such images differ, by anti-aliasing, from padding at full size. A very long side is box-reduced
        # first (Pillow's reducing_gap): a plain bicubic shrink of 64,000,000 px builds GBs of coefficients
        factor = side / (8 * size)
        gap = 3.0 if side > _REDUCE_ABOVE else None
        target = (max(1, round(width / factor)), max(1, round(height / factor)))
        img = img.resize(target, Image.Resampling.BICUBIC, reducing_gap=gap)
        width, height = img.size
        side = max(width, height)
    if width != height:
        square = Image.new("RGB", (side, side), PAD_COLOR)
        square.paste(img, ((side - width) // 2, (side - height) // 2))
        img = square
    return img.resize((size, size), Image.Resampling.BICUBIC) if side != size else img.copy()


def prepare_image(
    source: str | Path | bytes | Image.Image,
    size: int,
    mode: str = "crop",
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FittedImage:
    """Load, fit and hash an image: what the judge sees, with its raw RGB bytes for the vision encoder."""
    # errors name the path as typed (load_image's default); the record keeps the short file name
    fitted = fit_image(load_image(source, name=name, max_pixels=max_pixels), size, mode)
    if name is None and isinstance(source, (str, Path)):
        name = Path(source).name
    label = name or "<image>"
    rgb = fitted.tobytes()
    return FittedImage(
        image=fitted,
        rgb=rgb,
        width=fitted.width,
        height=fitted.height,
        sha256=hashlib.sha256(rgb).hexdigest(),
        name=label,
        mode=mode,
    )


def thumbnail_data_uri(img: Image.Image, max_side: int = 256) -> str:
    """A ``data:image/jpeg;base64,...`` URI of a copy at most ``max_side`` pixels wide and high (aspect
    kept; ``img`` is not modified)."""
    if max_side < 1:
        raise InputError(f"thumbnail size must be positive, got {max_side}", hint="use 256")
    rgb = _to_rgb(img)
    scale = max_side / max(rgb.width, rgb.height)
    if scale < 1:
        target = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        thumb = rgb.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0)
    else:
        thumb = rgb
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def pixel_grid(img: Image.Image, cols: int, rows: int) -> np.ndarray:
    """The image resampled to ``rows × cols`` RGB pixels (uint8 ``[rows, cols, 3]``) for terminal previews."""
    if cols < 1 or rows < 1:
        raise InputError(
            f"preview grid must be at least 1x1, got {cols}x{rows}", hint="use a larger terminal"
        )
    small = _to_rgb(img).resize((cols, rows), Image.Resampling.BOX)
    grid: np.ndarray = np.array(small, dtype=np.uint8)
    return grid


def synthetic_image(size: int = 336, seed: int = 0) -> Image.Image:
    """A deterministic generated picture: a sky gradient, a sun, green hills, a house with a red roof and a
    tree; ``seed`` moves and recolours things slightly. Same (size, seed) → same pixels."""
    rng = np.random.default_rng(seed)
    s = size / 336.0
    top = np.array([70, 130, 210]) + rng.integers(-20, 21, 3)
    bottom = np.array([190, 220, 250])
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    sky = (top * (1 - t) + bottom * t).astype(np.uint8)
    img = Image.fromarray(np.broadcast_to(sky, (size, size, 3)).copy(), mode="RGB")
    draw = ImageDraw.Draw(img)

    def box(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
        return (round(x0 * s), round(y0 * s), round(x1 * s), round(y1 * s))

    sx = 250 + int(rng.integers(-30, 31))
    draw.ellipse(
        box(sx, 30, sx + 56, 86), fill=(255, 214, 40), outline=(255, 170, 0), width=max(1, round(3 * s))
    )
    draw.ellipse(box(-80, 200, 220, 420), fill=(70, 160, 70))
    draw.ellipse(box(120, 215, 460, 440), fill=(90, 180, 80))
    draw.rectangle(box(0, 270, 336, 336), fill=(80, 170, 75))
    hx = 70 + int(rng.integers(-20, 21))
    wall = tuple(int(v) for v in (np.array([235, 220, 180]) + rng.integers(-15, 16, 3)))
    draw.rectangle(box(hx, 180, hx + 120, 280), fill=wall, outline=(90, 70, 50), width=max(1, round(2 * s)))
    draw.polygon([box(hx - 12, 182, hx + 60, 120)[:2], box(hx + 60, 120, hx + 132, 182)[:2],
                  box(hx + 132, 182, 0, 0)[:2]], fill=(200, 40, 40))  # fmt: skip
    draw.rectangle(box(hx + 48, 230, hx + 74, 280), fill=(110, 70, 40))
    draw.rectangle(box(hx + 14, 200, hx + 38, 224), fill=(150, 200, 240), outline=(60, 60, 60))
    draw.rectangle(box(hx + 84, 200, hx + 108, 224), fill=(150, 200, 240), outline=(60, 60, 60))
    tx = 255 + int(rng.integers(-15, 16))
    draw.rectangle(box(tx, 200, tx + 16, 285), fill=(120, 80, 45))
    draw.ellipse(box(tx - 32, 140, tx + 48, 220), fill=(40, 120, 50))
    return img
