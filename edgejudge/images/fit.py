"""Images as the judge sees them: fit to the vision tower's square input (``fit_image``, ``prepare_image``).

Owns the fit modes (``FIT_MODES``, validated by ``check_fit`` and nowhere else) and ``FittedImage``, the
record of an image as judged, whose ``pixels_sha256`` hashes the fitted RGB pixels (not the file: batch
rows' ``image_sha256`` is the file's hash).

- ``crop`` (default) = CLIPImageProcessor as in the reference evaluation: shortest side → ``size``
  (bicubic; long side ``int(size * long / short)``), then centre crop ``size × size``.
- ``pad`` = LLaVA's ``expand2square``: pad to a square with the CLIP mean colour ``PAD_COLOR``
  (122, 116, 104), centred, then resize to ``size × size`` (bicubic); the whole image stays visible.

Every normal image gets exactly those pixels. Fitting adds O(output) memory (at most ``_SMALL`` pixels or
4x the image for crop's intermediate), whatever the aspect ratio: a 1 x 64,000,000 strip included (Pillow
itself keeps one pointer per row, so such a strip is ~770 MB decoded). Strips (only where the full-size
intermediate would be over 16.7 MP and over 4x the image): ``crop`` runs the same two bicubic passes,
horizontal then vertical, over only the source rows the centre box needs; Pillow takes a box's
coordinates as 32-bit floats, so some pixels can differ from the full resize by 1 or 2 levels (none in
the evenly dividing cases of tests/test_images.py). ``pad`` of a strip whose square canvas would be over
16.7 MP and 16x the image shrinks it first (long side ``8 × size``; Pillow's box ``reduce`` first when the
long side is over 65,536 px), which differs from padding at full size by anti-aliasing only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import InputError, InvalidImageError
from .decode import DEFAULT_MAX_PIXELS, FORMAT_HINT, load_image, to_rgb, why

__all__ = ["PAD_COLOR", "FIT_MODES", "FittedImage", "ImageInput", "check_fit", "fit_image", "prepare_image"]

PAD_COLOR = (122, 116, 104)  # round(255 * CLIP image mean)
#: The image fit modes, THE vocabulary (settings, the CLI's --image-fit, the judge and the report use it).
FIT_MODES = ("crop", "pad")

_MAX_PAD_PIXELS = 8192 * 8192  # above this, "pad" shrinks the image before making the square canvas
_MAX_FIT_PIXELS = 8192 * 8192  # "crop" never resizes the whole image to more than this
_SMALL = 4096 * 4096  # a full-size intermediate (crop's resize, pad's canvas) this small is always fine
_REDUCE_ABOVE = 65_536  # long sides over this are box-reduced before a bicubic shrink (coefficient tables)


@dataclass(frozen=True)
class FittedImage:
    """What the judge sees: the fitted RGB ``image``, its raw bytes (``width*height*3``, row-major RGB),
    ``pixels_sha256`` the sha256 hex digest of those bytes (the pixels, not the file), the source ``name``
    and the fit ``mode`` ("crop" | "pad")."""

    image: Image.Image
    rgb: bytes
    width: int
    height: int
    pixels_sha256: str
    name: str
    mode: str


#: What the judge takes as an image: a path, the file's bytes, a PIL image, or an image already fitted.
ImageInput = str | Path | bytes | Image.Image | FittedImage


def check_fit(mode: Any) -> str:
    """``mode`` when it is one of ``FIT_MODES``; else ``InputError`` (THE check of a fit mode)."""
    if not isinstance(mode, str) or mode not in FIT_MODES:
        raise InputError(f"unknown image fit mode {mode!r}", hint=f"use one of: {', '.join(FIT_MODES)}")
    return mode


def fit_image(img: Image.Image, size: int, mode: str = "crop") -> Image.Image:
    """Fit an image to ``size × size`` RGB: ``crop`` (CLIP processor) or ``pad`` (LLaVA expand2square).

    Needs the input plus O(output) memory whatever the aspect ratio (see the module docstring). Raises
    ``InputError`` for an unknown mode (``check_fit``) or a size under 1."""
    check_fit(mode)
    if size < 1:
        raise InputError(f"image size must be positive, got {size}", hint="use the vision tower's size (336)")
    try:
        img = to_rgb(img)
    except Exception as exc:  # noqa: BLE001 - a caller's image in a mode Pillow cannot convert
        raise InvalidImageError(
            f"cannot convert image mode {img.mode} to RGB ({why(exc)})", hint=FORMAT_HINT
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
        pixels_sha256=hashlib.sha256(rgb).hexdigest(),
        name=label,
        mode=mode,
    )
