"""Pictures for people and demos: a report thumbnail, a terminal preview grid, the generated demo picture."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError
from .decode import to_rgb

__all__ = ["thumbnail_data_uri", "pixel_grid", "synthetic_image", "png_bytes"]


def png_bytes(rgb: bytes, width: int, height: int) -> bytes:
    """A lossless PNG of ``width`` × ``height`` raw 8-bit RGB pixels (the fitted image as a remote engine
    sends it: a server decodes exactly these pixels, and the same pixels always give the same bytes, which
    its prompt cache recognises). ``InputError`` when the buffer is not width × height × 3 bytes."""
    if width < 1 or height < 1 or len(rgb) != width * height * 3:
        raise InputError(
            f"{len(rgb)} bytes are not {width}x{height} RGB pixels", hint="give width × height × 3 bytes"
        )
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def thumbnail_data_uri(img: Image.Image, max_side: int = 256) -> str:
    """A ``data:image/jpeg;base64,...`` URI of a copy at most ``max_side`` pixels wide and high (aspect
    kept; ``img`` is not modified)."""
    if max_side < 1:
        raise InputError(f"thumbnail size must be positive, got {max_side}", hint="use 256")
    rgb = to_rgb(img)
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
    small = to_rgb(img).resize((cols, rows), Image.Resampling.BOX)
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
