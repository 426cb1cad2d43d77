"""What the HTML pages of a batch (``report``, ``compliance``) share: escaping, numbers, the image as judged,
the page head, and checking and writing the output file. Nothing here prints.

Every piece of row text goes through ``esc`` (HTML-escaped, never raising on a value of the wrong type, lone
surrogates replaced). ``Thumbnails`` embeds images only from under the image root (``image_root``, else the
results file's folder; symlinks resolved) unless ``embed_outside_root``, fitted at the row's ``image_size``
clamped to ``MAX_THUMBNAIL_FIT``; the others get a reason for a placeholder. ``HEAD_CSP`` is the page's
Content-Security-Policy: no network access, inline styles and scripts, data: images only.
"""

from __future__ import annotations

import html
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _fs
from .errors import EdgeJudgeError, InputError

if TYPE_CHECKING:
    from .batch.result import ResultRow

__all__ = [
    "THUMBNAIL_SIDE",
    "MAX_THUMBNAIL_FIT",
    "HEAD_CSP",
    "Thumbnails",
    "text",
    "esc",
    "number",
    "real",
    "check_paths",
    "write_page",
]

THUMBNAIL_SIDE = 224
MAX_THUMBNAIL_FIT = 1024  # a row's image_size above this is fitted at this size (the look is the same)
_DEFAULT_FIT_SIZE = 336  # a row without a usable image_size: the vision tower's usual size
_SURROGATES = re.compile("[\ud800-\udfff]")
HEAD_CSP = (
    '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
    "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
)


def text(value: Any) -> str:
    """Any row value as text, never raising (huge ints, deep nesting), lone surrogates replaced."""
    if value is None:
        return ""
    if isinstance(value, str):
        out = value
    else:
        try:
            out = str(value)
        except Exception:  # noqa: BLE001 - ValueError (int over 4300 digits), RecursionError, ...
            out = f"<{type(value).__name__} value>"
    return _SURROGATES.sub("\ufffd", out)


def esc(value: Any) -> str:
    """``text(value)`` HTML-escaped, quotes included (safe in element text and attribute values)."""
    return html.escape(text(value), quote=True)


def number(value: Any) -> float | None:
    """A finite number, or None for anything else (bools, text, NaN, infinities, huge ints)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        out = float(value)
    except OverflowError:
        return None
    return out if math.isfinite(out) else None


def _user_path(value: Any) -> Path | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return _fs.user_path(value, what="image path")
    except EdgeJudgeError:
        return None


def real(path: Path) -> Path | None:
    """``path`` with symlinks resolved, or None when it cannot be resolved."""
    try:
        return Path(os.path.realpath(path))
    except (OSError, ValueError):
        return None


class Thumbnails:
    """Data URIs of the images as judged (fitted with each row's size and fit), cached per file; only
    files under the image root (symlinks resolved) unless ``embed_outside_root``."""

    def __init__(self, image_root: Path | None, results_dir: Path, *, embed_outside_root: bool) -> None:
        self.image_root = image_root
        self.results_dir = results_dir
        self.root = real(image_root if image_root is not None else results_dir)
        self.embed_outside_root = embed_outside_root
        self.cache: dict[tuple[str, int, str], str | None] = {}

    def candidates(self, row: ResultRow) -> list[Path]:
        name, recorded = _user_path(row.image), _user_path(row.image_path)
        paths: list[Path] = []
        if name is not None and name.is_absolute():
            paths.append(name)
        elif name is not None and self.image_root is not None:
            paths.append(self.image_root / name)
        if recorded is not None:
            paths.append(recorded)
        if name is not None and not name.is_absolute():
            paths.append(self.results_dir / name)
        return paths

    def inside(self, resolved: Path) -> bool:
        return self.embed_outside_root or (self.root is not None and resolved.is_relative_to(self.root))

    def uri(self, row: ResultRow) -> tuple[str | None, str]:
        """``(data URI, "")`` or ``(None, why)`` with why "no image", "image not found", "image
        unreadable" or "outside the image root"."""
        from .images import FIT_MODES, prepare_image, thumbnail_data_uri

        raw_size, raw_fit = row.image_size, row.image_fit
        size = raw_size if raw_size is not None and 1 <= raw_size else _DEFAULT_FIT_SIZE
        size = min(size, MAX_THUMBNAIL_FIT)
        fit = raw_fit if raw_fit in FIT_MODES else FIT_MODES[0]
        paths = self.candidates(row)
        why = "no image" if not paths and not row.image else "image not found"
        for path in paths:
            resolved = real(path)
            if resolved is None:
                continue
            if not self.inside(resolved):
                why = "outside the image root"
                continue
            key = (str(resolved), size, fit)
            if key not in self.cache:
                try:  # the resolved path: what was checked is what is opened
                    image = prepare_image(resolved, size, fit).image
                    self.cache[key] = thumbnail_data_uri(image, THUMBNAIL_SIDE)
                except (EdgeJudgeError, OSError):
                    self.cache[key] = None
            if self.cache[key] is not None:
                return self.cache[key], ""
            if os.path.lexists(resolved):
                why = "image unreadable"
        return None, why


def check_paths(
    results_path: Path, output_path: Path, *, what: str = "report", example: str = "report.html"
) -> None:
    """``InputError`` unless ``results_path`` is a regular file and ``output_path`` is neither a folder nor
    the results file itself (a hard link or a symlink to it included)."""
    fd, _ = _fs.open_regular(  # not found / a folder / a device such as /dev/null: say which
        results_path,
        label=str(results_path),
        what="results file",
        max_bytes=None,
        error=InputError,
    )
    os.close(fd)
    if output_path.is_dir():
        raise InputError(
            f"the {what} path is a folder: {output_path}",
            hint=f"pass a file name, e.g. {example}",
            about="output",
        )
    if _fs.same_file(output_path, results_path) or real(output_path) == real(results_path):
        raise InputError(
            f"the {what} would overwrite the results file",
            hint=f"write the {what} to another file, e.g. {example}",
            about="output",
        )


def write_page(output_path: Path, data: bytes, *, what: str = "report") -> None:
    """Write ``data`` to ``output_path`` atomically (mode 0o644: a file to share), creating its folder."""
    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        _fs.atomic_write(output_path, data, mode=0o644)
    except OSError as err:
        raise InputError(
            f"cannot write the {what} {output_path}: {err.strerror or err}",
            hint=f"write the {what} into a folder you can write to",
            about="output",
        ) from None
