"""A folder of images (and their captions) as a batch input file: what a moderator points edgejudge at.

``collect_folder`` walks a folder (sorted, recursively, hidden files and folders skipped, symlinked folders
not followed) for images by extension (``IMAGE_SUFFIXES``; the judge still checks each file's real format
when it opens it) and writes one JSONL row per image: ``id`` (the image's path inside the folder, with
``/``), ``image`` (relative to the output file's folder, which is where ``batch`` resolves it), ``response``
(the caption: the text of the sidecar ``<name>.txt`` beside the image, UTF-8, at most
``MAX_CAPTION_BYTES``; without one, ``no_caption``), and ``instruction`` / ``reference`` when given. A
caption that cannot be read (not UTF-8, too large, not a regular file) becomes a row without a response,
which the batch reports as that row's error; the collection goes on. The file is written atomically and
an existing one is replaced only with ``overwrite``. Nothing here prints.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _fs, _jsonl
from .errors import InputError

__all__ = ["IMAGE_SUFFIXES", "MAX_CAPTION_BYTES", "NO_CAPTION", "Collected", "collect_folder", "folder_rows"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
#: A caption file is read only when it is a regular file of at most this size.
MAX_CAPTION_BYTES = 256 * 2**10
#: The response of an image without a caption file (the judge needs a text to judge with the image).
NO_CAPTION = "(No text accompanies this image.)"


@dataclass(frozen=True)
class Collected:
    """What ``collect_folder`` wrote: ``rows`` images, ``captioned`` of them with a caption file,
    ``unreadable`` captions that could not be read (those rows have no response), to ``output``."""

    output: str
    rows: int
    captioned: int
    unreadable: int


def _images(folder: Path) -> Iterator[Path]:
    for top, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                yield Path(top) / name


def folder_rows(
    folder: str | Path,
    *,
    relative_to: Path,
    instruction: str | None = None,
    reference: str | None = None,
    no_caption: str = NO_CAPTION,
) -> Iterator[tuple[dict[str, Any], str]]:
    """``(row, caption_state)`` per image of ``folder`` (state ``captioned``, ``none`` or ``unreadable``);
    image paths relative to ``relative_to``. ``InputError`` when ``folder`` is not a folder."""
    root = _fs.user_path(folder, what="image folder")
    if not root.is_dir():
        raise InputError(
            f"not a folder: {root}", hint="pass the folder that holds the images", about="folder"
        )
    for image in _images(root):
        row: dict[str, Any] = {"id": image.relative_to(root).as_posix()}
        row["image"] = os.path.relpath(image.absolute(), relative_to.absolute())
        if instruction is not None:
            row["instruction"] = instruction
        caption_file = image.with_suffix(".txt")
        state = "none"
        response: str | None = no_caption
        if os.path.lexists(caption_file):
            try:
                data = _fs.read_regular(caption_file, what="caption file", max_bytes=MAX_CAPTION_BYTES)
                response = data.decode("utf-8").strip() or no_caption
                state = "captioned"
            except (InputError, UnicodeDecodeError):
                response, state = None, "unreadable"
        if response is not None:
            row["response"] = response
        if reference is not None:
            row["reference"] = reference
        yield row, state


def collect_folder(
    folder: str | Path,
    output: str | Path,
    *,
    instruction: str | None = None,
    reference: str | None = None,
    no_caption: str = NO_CAPTION,
    overwrite: bool = False,
) -> Collected:
    """Write the batch input of ``folder``'s images to ``output`` (see the module docstring).

    ``InputError``: ``folder`` is not a folder or holds no image; ``output`` exists (without
    ``overwrite``), is a folder, or its folder does not exist or cannot be written."""
    target = _fs.user_path(output, what="output path")
    if target.is_dir():
        raise InputError(f"the output path is a folder: {target}", hint="pass a file name, e.g. in.jsonl")
    if os.path.lexists(target) and not overwrite:
        raise InputError(
            f"{target} already exists", hint="choose another output file, or overwrite it", about="overwrite"
        )
    if not target.parent.is_dir():
        raise InputError(f"folder does not exist: {target.parent}", hint="create it first", about="output")
    lines: list[bytes] = []
    captioned = unreadable = 0
    for row, state in folder_rows(
        folder, relative_to=target.parent, instruction=instruction, reference=reference, no_caption=no_caption
    ):
        lines.append(_jsonl.dumps_line(row))
        captioned += state == "captioned"
        unreadable += state == "unreadable"
    if not lines:
        raise InputError(
            f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})",
            hint="pass the folder that holds the images",
        )
    try:
        _fs.atomic_write(target, b"".join(lines))
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc}", about="output") from None
    return Collected(str(target), len(lines), captioned, unreadable)
