"""Putting a converted pair into the output folder without ever losing what was there, and cleaning up
after runs that were killed.

- Temporaries are named ``.<final-name>.<host>.<pid>.<tag>.<kind>.partial`` in the output folder
  (``kind``: ``f16``, ``quant``, ``backup``, ``probe``), so a later run can tell whose they are.
- :func:`check_destination` refuses, before any work, a final name that is taken by a folder or by
  anything else that is not a regular file (or a symlink): edgejudge never replaces those.
- :func:`install_pair` moves complete temporaries into place. Each existing final file is first
  hard-linked to a ``backup`` temporary (renamed when the filesystem has no hard links); if any move fails,
  every final name is put back exactly as it was (old file restored, or the new one removed when there
  was none) and only temporaries are deleted. A run killed between the two renames (``kill -9``) can
  leave a new text model beside the old projector; nothing is deleted.
- :func:`clean_stale` removes temporaries whose owning process is gone (or that are older than
  :data:`STALE_AFTER_S`), such as those a ``kill -9`` left; temporaries of running converts are kept.
  The owner is judged only for temporaries of this host: on a folder shared by several machines, another
  host's temporary is removed by age alone.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConversionError
from .limits import shown

__all__ = [
    "STALE_AFTER_S",
    "TEMP_KINDS",
    "temp_name",
    "temp_path",
    "check_destination",
    "install_pair",
    "clean_stale",
]

#: a temporary older than this is removed whatever its pid says (pids are reused).
STALE_AFTER_S = 24 * 3600
TEMP_KINDS = ("f16", "quant", "backup", "probe")

_TEMP = re.compile(
    r"^\.(?P<final>.+)\.(?P<host>[A-Za-z0-9-]{1,32})\.(?P<pid>[0-9]{1,10})\.(?P<tag>[0-9a-f]{8})"
    r"\.(?P<kind>" + "|".join(TEMP_KINDS) + r")\.partial$"
)
#: temporaries of edgejudge versions before the pid scheme (no owner recorded): removed by age only.
_LEGACY_TEMP = re.compile(r"^\..+\.gguf\.[0-9a-f]{8}\.(t16|tq|m16|mq)\.tmp$")


def _host() -> str:
    """This machine's name as it appears in temporary names (letters, digits and '-', at most 32)."""
    name = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname()).strip("-")[:32]
    return name or "host"


def temp_name(
    final_name: str, kind: str, tag: str, *, pid: int | None = None, host: str | None = None
) -> str:
    """The name of the temporary of ``kind`` for ``final_name`` (``tag``: 8 hex digits), owned by ``pid``
    on ``host`` (default: this process on this machine)."""
    if kind not in TEMP_KINDS:
        raise ValueError(f"unknown temporary kind {kind!r}")
    owner = os.getpid() if pid is None else pid
    return f".{final_name}.{host or _host()}.{owner}.{tag}.{kind}.partial"


def temp_path(outdir: Path, final_name: str, kind: str, tag: str) -> Path:
    """The temporary of ``kind`` for ``final_name`` owned by this process, in ``outdir``."""
    return outdir / temp_name(final_name, kind, tag)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return False
    return True


def clean_stale(outdir: Path, *, now: float | None = None) -> list[str]:
    """Remove temporaries in ``outdir`` left by dead processes (or older than STALE_AFTER_S); return
    their names. Only regular files matching the temporary names are touched; errors are ignored. A
    ``backup`` whose final name is missing (a run killed after moving the old file aside, where hard links
    are not available) is renamed back onto it instead: the old model is never lost."""
    removed: list[str] = []
    now = time.time() if now is None else now
    host = _host()
    try:
        entries = list(os.scandir(outdir))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        legacy = match is None and _LEGACY_TEMP.match(entry.name) is not None
        if match is None and not legacy:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        old = now - info.st_mtime > STALE_AFTER_S
        if not old:
            if legacy or match is None or match.group("host") != host:
                continue  # no owner this machine can check: removed by age only
            if _pid_alive(int(match.group("pid"))):
                continue
        if match is not None and match.group("kind") == "backup":
            final = Path(outdir) / match.group("final")
            if not os.path.lexists(final):  # killed while the old file was moved aside: put it back
                try:
                    os.rename(entry.path, final)
                except OSError:
                    continue
                removed.append(entry.name)
                continue
        try:
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(entry.name)
    return removed


def check_destination(path: Path, what: str) -> None:
    """Refuse a final name taken by a folder or a special file (a regular file or symlink is replaced)."""
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise ConversionError(
            f"cannot check the {what} destination {shown(str(path))}: {exc.strerror or exc}",
            hint="check the output directory",
        ) from None
    if stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode):
        return
    kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
    raise ConversionError(
        f"the {what} would be written to {shown(str(path))}, which is {kind}",
        hint="move it away, or choose another output directory or model name",
        about=("outdir", "name"),
    )


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass  # a temporary we cannot remove is left for clean_stale (its pid will be dead)


def install_pair(moves: Sequence[tuple[Path, Path, str]], tag: str) -> None:
    """Move each complete temporary onto its final name (``(temporary, final, what)``), all or nothing.

    On any failure (or interrupt) every final name is restored to what it was, the backups are removed
    and the error propagates; the caller removes its own temporaries.
    """
    for _, final, what in moves:
        check_destination(final, what)
    backups: dict[Path, Path] = {}
    placed: list[Path] = []
    try:
        for _, final, _what in moves:
            if not os.path.lexists(final):
                continue
            backup = temp_path(final.parent, final.name, "backup", tag)
            try:
                os.link(final, backup, follow_symlinks=False)
            except OSError:  # no hard links here (FAT, some network filesystems): move it aside
                os.replace(final, backup)
            backups[final] = backup
        for tmp, final, _what in moves:
            os.replace(tmp, final)
            placed.append(final)
    except BaseException:
        for final in reversed(placed):
            previous = backups.pop(final, None)
            try:
                if previous is not None:
                    os.replace(previous, final)
                else:
                    os.unlink(final)
            except OSError:
                pass
        for final, backup in backups.items():
            if not os.path.lexists(final):  # moved aside but not replaced yet: put it back
                try:
                    os.replace(backup, final)
                    continue
                except OSError:
                    pass
            _unlink_quietly(backup)
        raise
    for backup in backups.values():
        _unlink_quietly(backup)
