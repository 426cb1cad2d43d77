"""An exclusive lock file that serialises read-modify-write cycles of the model registry.

Two ``edgejudge models …`` commands writing at once (a pull finishing while another sets the default)
would otherwise each read the old registry and the later write would drop the earlier one's change.
POSIX: ``fcntl.flock``; Windows: ``msvcrt.locking`` on the first byte. The lock is released when the file
is closed, so a crashed holder never leaves it stuck.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import RegistryError

__all__ = ["locked"]


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block; waits for other holders."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise RegistryError(
            f"cannot lock the model registry in {path.parent}: {err.strerror or err}",
            hint="check permissions, or point EDGEJUDGE_MODELS_DIR to a writable directory",
        ) from None
    try:
        if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
            import msvcrt

            while True:
                try:
                    msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # retries for ~10 s, then raises
                    break
                except OSError:
                    continue
            try:
                yield
            finally:
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
