"""Reading user files safely (paths as typed, regular files only, bounded sizes, never a hang) and writing
artefacts atomically.

Owns the checks every reader of a user-named file applies before reading anything (images, rubric files,
batch inputs, resume hashing): the path is valid (no NUL byte, ``~`` and ``~user`` expand or are refused),
it names a regular file (not a folder, FIFO, socket or device such as ``/dev/zero``, which would block or
never end), and it is not larger than the caller's limit. Files are opened with ``O_NONBLOCK`` so that a
FIFO never blocks the open, and checked with ``fstat`` on the open descriptor (no race between check and
read). Errors are raised as the caller's ``EdgeJudgeError`` class with a one-line message naming the path
as the user typed it. ``read_stamped``/``sha256_stamped`` also return the file's ``FileStamp`` (from
``fstat`` at open, checked again after the last byte: a file written while it is read gets no stamp), so a
file hashed once can be read later and known to be the bytes that were hashed (a file changed just before
it was hashed, or while it was read, gets no stamp, and its reader compares hashes instead).

Also owns THE atomic file write (``atomic_write``): every artefact (report page, rubric, registry, saved
verdict, probe cache, demo picture) is written to a uniquely named hidden temp file in the target's folder,
fsynced, then renamed over the target, so a reader sees the old file or the new one, never a partial one.
The new file gets the mode a plain ``open(path, "w")`` would give it (``0o666`` less the umask) unless the
caller asks for another (registry, rubrics and saved verdicts: ``0o600``; the report: ``0o644``).
(Publishing a whole folder, and the two-file judge-pair install in ``convert/install.py``, are other
protocols and live with their owners.)
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, NamedTuple

from .errors import EdgeJudgeError, InputError

__all__ = [
    "write_user_file",
    "user_path",
    "open_regular",
    "read_regular",
    "read_utf8",
    "read_stamped",
    "sha256_stamped",
    "FileStamp",
    "RACY_NS",
    "same_file",
    "describe_kind",
    "atomic_write",
    "current_umask",
]


def user_path(
    text: str | os.PathLike[str], *, what: str = "path", error: type[EdgeJudgeError] = InputError
) -> Path:
    """``text`` as a ``Path``, ``~``/``~user`` expanded; a NUL byte or an unknown ``~user`` is an error."""
    raw = os.fspath(text)
    if "\x00" in raw:
        raise error(f"{what} contains a NUL byte: {raw!r}", hint="remove the NUL character from the path")
    try:
        return Path(raw).expanduser()
    except RuntimeError:  # "~nosuchuser/...": the user does not exist
        user = raw.split("/", 1)[0]
        raise error(
            f"{what} {raw}: unknown user {user!r} in '~user' prefix",
            hint="write the full path, or ./" + raw + " for a folder literally named like that",
        ) from None


def describe_kind(mode: int) -> str:
    """A short name for a file's kind (for messages): folder, named pipe (FIFO), socket, device, ..."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def open_regular(
    path: Path, *, label: str, what: str, max_bytes: int | None, error: type[EdgeJudgeError] = InputError
) -> tuple[int, os.stat_result]:
    """Open ``path`` read-only and return ``(fd, stat)``; the caller closes ``fd``.

    Refused, as ``error`` naming ``label``: a missing file, a folder, anything that is not a regular file
    (checked on the open descriptor), a file over ``max_bytes``.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"{what} not found: {label}", hint="check the path") from None
    except IsADirectoryError:
        raise error(f"{what} is a folder: {label}", hint="pass a file, not a folder") from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise error(
            f"cannot open {what} {label}: {reason}", hint="check the path and its permissions"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(
                f"{what} is {describe_kind(info.st_mode)}, not a regular file: {label}",
                hint="pass a regular file (not a folder, pipe or device)",
            )
        if max_bytes is not None and info.st_size > max_bytes:
            raise error(
                f"{what} is too large ({info.st_size} bytes, limit {max_bytes}): {label}",
                hint="pass a smaller file",
            )
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, info


#: A file whose ctime is this close to the moment it is hashed gets no stamp (``sha256_stamped``).
RACY_NS = 2 * 10**9


class FileStamp(NamedTuple):
    """One version of a file, from ``fstat``: device, inode, size, mtime and ctime in ns. Any write changes
    the ctime (which no user call can set back). A stamp taken at open says nothing about writes that land
    while the file is read, so ``read_stamped`` and ``sha256_stamped`` take it at open AND after the last
    byte and give one only when both agree: then the bytes are one version of the file, and a later read
    that gets the same stamp read the same bytes (a caller that hashed a file knows it read what it hashed,
    without hashing it twice). File system clocks tick coarsely, so a file written just before it was
    hashed could be written again within the same tick: such a file gets no stamp (``sha256_stamped``; git
    calls this "racily clean"). That rule compares the file's ctime with this machine's clock: on a network
    file system whose server clock lags by more than ``RACY_NS`` a fresh file may still get a stamp."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, info: os.stat_result) -> FileStamp:
        return cls(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _unchanged(stamp: FileStamp, fd: int) -> FileStamp | None:
    """``stamp`` (taken at open) when ``fd``'s file still has it after the read, else ``None``."""
    return stamp if FileStamp.of(os.fstat(fd)) == stamp else None


def read_regular(
    path: Path,
    *,
    label: str | None = None,
    what: str = "file",
    max_bytes: int | None,
    error: type[EdgeJudgeError] = InputError,
) -> bytes:
    """The bytes of a regular file, at most ``max_bytes`` (a file growing past it while read is refused)."""
    return read_stamped(path, label=label, what=what, max_bytes=max_bytes, error=error)[0]


def read_utf8(
    path: Path,
    *,
    what: str,
    max_bytes: int | None,
    error: type[EdgeJudgeError] = InputError,
    hint: str = "save it as UTF-8",
) -> tuple[str, bytes]:
    """``(text, bytes)`` of a regular UTF-8 text file (``read_regular``); bytes that are not UTF-8 are
    ``error`` naming the file and the first bad byte."""
    data = read_regular(path, what=what, max_bytes=max_bytes, error=error)
    try:
        return data.decode("utf-8"), data
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start}: {exc.reason})", hint=hint) from None


def read_stamped(
    path: Path,
    *,
    label: str | None = None,
    what: str = "file",
    max_bytes: int | None,
    error: type[EdgeJudgeError] = InputError,
) -> tuple[bytes, FileStamp | None]:
    """``read_regular`` and the file's ``FileStamp``: the one it had at open, when it still has it after the
    read; ``None`` when it changed meanwhile (the bytes may mix two versions: compare their hash)."""
    label = label or str(path)
    fd, info = open_regular(path, label=label, what=what, max_bytes=max_bytes, error=error)
    limit = max_bytes if max_bytes is not None else info.st_size
    try:
        with os.fdopen(fd, "rb", closefd=True) as fh:
            data = fh.read(limit + 1)
            stamp = _unchanged(FileStamp.of(info), fh.fileno())
    except OSError as exc:
        raise error(f"cannot read {what} {label}: {exc.strerror or exc}", hint="check the file") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise error(f"{what} is too large (over {max_bytes} bytes): {label}", hint="pass a smaller file")
    return data, stamp


def sha256_stamped(
    path: Path,
    *,
    label: str | None = None,
    what: str = "file",
    max_bytes: int | None,
    error: type[EdgeJudgeError] = InputError,
) -> tuple[str, FileStamp | None]:
    """The sha256 hex digest of a regular file's bytes (the checks of ``read_regular``) and the file's
    ``FileStamp`` as it was opened; ``None`` instead of a stamp when the file changed while it was hashed
    or less than ``RACY_NS`` before (a reader must then compare the bytes' hash)."""
    label = label or str(path)
    began = time.time_ns()
    fd, info = open_regular(path, label=label, what=what, max_bytes=max_bytes, error=error)
    digest = hashlib.sha256()
    seen = 0
    try:
        with os.fdopen(fd, "rb", closefd=True) as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                seen += len(chunk)
                if max_bytes is not None and seen > max_bytes:
                    break
                digest.update(chunk)
            unchanged = _unchanged(FileStamp.of(info), fh.fileno())
    except OSError as exc:
        raise error(f"cannot read {what} {label}: {exc.strerror or exc}", hint="check the file") from None
    if max_bytes is not None and seen > max_bytes:
        raise error(f"{what} is too large (over {max_bytes} bytes): {label}", hint="pass a smaller file")
    trusted = unchanged is not None and unchanged.ctime_ns < began - RACY_NS
    return digest.hexdigest(), (unchanged if trusted else None)


def same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` are the same file (device + inode: hard links, symlinks, other spellings)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def current_umask() -> int:
    """The process's umask, read without changing it where the system tells (Linux: ``/proc/self/status``);
    elsewhere set to ``0o077`` and back at once (a file another thread creates meanwhile gets a stricter
    mode, never a looser one)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8) & 0o777
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def atomic_write(
    path: str | os.PathLike[str], data: bytes | Callable[[BinaryIO], None], *, mode: int | None = None
) -> None:
    """Replace ``path`` with ``data`` atomically: readers see the old file or the new one, never a part.

    ``data`` is the file's bytes, or a function that writes them to the binary handle it is given. The
    bytes go to a temp file with a unique hidden name (``.<name>.<random>.tmp``) in the same folder (so
    the rename never crosses file systems), are flushed and fsynced, the file gets ``mode`` (default: what
    ``open(path, "w")`` would give, ``0o666`` less the umask), then ``os.replace`` puts it in place. On
    any failure (an ``OSError``, an exception raised by ``data``, ``KeyboardInterrupt``) the temp file is
    removed and the exception propagates unchanged; the target is untouched. The folder must exist
    (callers decide whether to create it).
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(data, bytes):
                handle.write(data)
            else:
                data(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, (0o666 & ~current_umask()) if mode is None else mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def write_user_file(path: Path, data: bytes | Callable[[BinaryIO], None], *, what: str, about: str) -> None:
    """``atomic_write`` of a file the user named (``what``: "the output", "the answers file"; ``about``: the
    parameter naming it), its folder created: an OSError is one ``InputError`` naming the file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
    except OSError as exc:
        raise InputError(
            f"cannot write {what} {path}: {exc.strerror or exc}",
            hint=f"write {what} into a folder you can write to",
            about=about,
        ) from None


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: not every platform or file system can fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
