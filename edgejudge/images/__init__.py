"""Images: the only Pillow importer (this package). Open, validate, orient, convert to RGB, fit.

- ``decode``: the bytes of an image in (``load_image``): allowed formats only, sniffing what a refused
  file is, the pixel limit, EXIF orientation, any mode to RGB tile by tile, every decoder failure one
  ``InvalidImageError``.
- ``fit``: what the judge sees (``prepare_image`` → ``FittedImage``, ``fit_image``): the fit modes
  (``FIT_MODES``, ``check_fit``), crop and pad, strips in bounded memory, the fitted pixels' hash
  (``FittedImage.pixels_sha256``); ``ImageInput`` is what the judge accepts as an image.
- ``pictures``: thumbnails (report), preview grids (wizard) and the generated demo picture.

An image file is read once and decoded once per ``prepare_image`` call; a ``FittedImage`` passed back in
is used as is.
"""

from __future__ import annotations

from .decode import (
    ALLOWED_FORMATS,
    ALPHA_BACKGROUND,
    DEFAULT_MAX_PIXELS,
    MAX_FILE_BYTES,
    load_image,
    sniff_format,
)
from .fit import FIT_MODES, PAD_COLOR, FittedImage, ImageInput, check_fit, fit_image, prepare_image
from .pictures import pixel_grid, png_bytes, synthetic_image, thumbnail_data_uri

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
    "png_bytes",
    "synthetic_image",
    "sniff_format",
]
