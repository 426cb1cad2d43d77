"""The one-writer lock of a batch output: an exclusive ``flock`` on a hidden ``.<output>.edgejudge-lock``
beside the output's real path, holding the holder's pid (for the message a second run gets).

The name is edgejudge's own, so no other tool's file (``uv.lock``, ``poetry.lock``) is ever taken. The kernel
drops the lock when its holder dies, so a lock file left by a killed run never blocks; the holder removes
the file when it releases the lock. Used by ``batch.log`` (repair under the lock) and ``batch.run_batch``.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from .. import _fs
from ..errors import InputError, OutputBusyError

__all__ = ["OutputLock"]


class OutputLock:
    """An exclusive lock on one batch output: ``flock`` on ``.<output>.edgejudge-lock`` beside its real path.

    ``acquire`` raises ``OutputBusyError`` (an ``InputError``) "… is already being written by another
    edgejudge (pid N)" when another process holds it (never waits). The lock file holds the holder's pid;
    ``release`` removes it. A lock file left by a killed run is not held by anyone (the kernel released the
    flock) and is taken over. Use as a context manager, or pass an acquired lock to
    ``run_batch``/``repair_output``.
    """

    def __init__(self, output: str | Path) -> None:
        self.output = _fs.user_path(output, what="output path")
        real = Path(os.path.realpath(self.output))
        self.path = real.with_name(f".{real.name}.edgejudge-lock")  # a name no other tool uses
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def covers(self, output: Path) -> bool:
        """True when this lock is held and is the lock of ``output`` (any spelling of it)."""
        return self.held and OutputLock(output).path == self.path

    def acquire(self) -> OutputLock:
        if self._fd is not None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"cannot write the output {self.output}: {exc.strerror or exc}",
                hint="write the output into a folder you can write to",
                about="output",
            ) from None
        for _ in range(50):
            try:
                flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
                fd = os.open(self.path, flags, 0o644)
            except OSError as exc:
                raise InputError(
                    f"cannot lock the output {self.output}: cannot create {self.path}: {exc.strerror or exc}",
                    hint="write the output into a folder you can write to",
                    about="output",
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                raise OutputBusyError(
                    f"{self.output} is already being written by another edgejudge (pid {pid or 'unknown'})",
                    hint="wait for that run to finish or stop it, or write to another output file",
                    about="output",
                ) from None
            except OSError as exc:
                os.close(fd)
                raise InputError(
                    f"cannot lock the output {self.output}: {exc.strerror or exc}",
                    hint="put the output on a local file system",
                ) from None
            try:  # the run that held it may have removed the file just before we locked it: lock anew
                current = os.stat(self.path, follow_symlinks=False)
                same = os.path.samestat(os.fstat(fd), current)
            except OSError:
                same = False
            if same:
                break
            os.close(fd)
        else:  # pragma: no cover - 50 runs racing for one output
            raise InputError(f"cannot lock the output {self.output}: the lock file keeps changing")
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:  # the pid is only for the message
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding it: a waiting run then re-checks and locks anew
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and len(text) < 12 else None
