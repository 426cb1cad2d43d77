"""The append-only batch log on disk: what counts as one, its lock, crash repair, and reading it back.

Owns ``OutputLock``, the checks on an output path (``check_output``, ``output_state``), the scan of an
output file, the cut-row rule, ``repair_output``, ``read_results`` (the rows as JSON objects) and
``read_result_rows`` (the same rows as ``ResultRow`` records). ``edgejudge.batch`` re-exports the public
names and its ``run_batch`` writes through them. The row shape (``is_batch_row``, ``ROW_KEYS``) lives beside
``ResultRow`` in ``batch.result``, its one home.

Output semantics: the output file is append-only; each judged row is written (and fsync'd) as one line as
soon as it is done. When an id is judged again (changed inputs, ``retry_errors``), a new line is appended
and **the last line for an id wins**: readers must dedupe by id keeping the last (``read_results`` does).

Safety of the output (what ``check_output``, ``repair_output`` and ``run_batch`` guarantee):

- Only an **edgejudge batch log** is appended to or repaired. A non-empty file is one when at least one of
  its lines is a batch row (``is_batch_row``: a JSON object with every key ``base_row`` writes, ``id`` a
  string, ``status`` ok/error, ``key`` 64 hex digits), or when it holds nothing but a batch row cut short
  (a crash while writing the very first row). Anything else (a JSON file, a CSV, an image, garbage) is
  refused with an ``InputError`` and left byte for byte as it was. Complete lines that are not batch rows
  (hand edits, hostile lines) are ignored by every reader and counted (``BatchSummary.ignored_lines``).
- **Repair** touches only the bytes after the last newline, and only when they are a batch row cut short:
  valid UTF-8 (a character cut at the end allowed), no control character, a prefix of a row as edgejudge
  writes it (``{"id": "…", "line": N, "status": "ok"|"error", …``; at least ``{"id": "`` when the file has
  no complete row), not valid JSON on their own (a complete JSON document is somebody's file) and every
  complete line of the file a batch row. Then they are cut (``ftruncate``, one
  system call, fsync). A last row complete but for its newline gets the newline instead (nothing cut).
- The output is never the input (compared as files: device + inode, so hard links, symlinks and other
  spellings are caught), never a folder, FIFO or device.
- **One writer**: ``run_batch`` holds an exclusive ``flock`` on ``.<output>.edgejudge-lock`` (a hidden file
  beside the output's real path, named so that no other tool's file, e.g. ``uv.lock``, is ever taken; the
  pid inside, for the message) for the whole run, and a second ``flock`` on the output file itself
  (so a hard-linked name is caught too). A second run gets ``OutputBusyError`` "already being written by
  another edgejudge (pid N)". The kernel drops the locks when a run dies, so a stale lock file never
  blocks; the lock file is removed at the end of a run.
"""

from __future__ import annotations

import codecs
import fcntl
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _fs, _jsonl
from ..errors import InputError, OutputBusyError
from .lock import OutputLock
from .result import ResultRow, is_batch_row, is_log_record, record_key
from .rows import read_lines

__all__ = [
    "MAX_OUTPUT_BYTES",
    "MAX_OUTPUT_LINE",
    "OutputLock",
    "check_output",
    "repair_output",
    "read_results",
    "read_result_rows",
    "output_state",
    "scan_output",
    "repair_locked",
    "open_output",
    "write_all",
]

#: An output (results) file is read only when it is a regular file of at most this size.
MAX_OUTPUT_BYTES = 16 * 2**30
#: A longer line of an output file is not a batch row (rows hold a few KB; inputs lines are at most 16 MiB).
MAX_OUTPUT_LINE = 64 * 2**20
_CONTROL = re.compile(rb"[\x00-\x1f]")
_NOT_A_ROW = "not a JSON object with the batch row fields"


@dataclass
class _Scan:
    """What one pass over an output file found (see the module docstring for the rules)."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # by ``result.record_key``
    records: list[dict[str, Any]] = field(default_factory=list)  # decision/run/override, in file order
    batch_rows: int = 0
    foreign: int = 0
    first_foreign: int | None = None
    problem: str | None = None
    tail: str = "none"  # "none" (ends in a newline) | "row" (a whole row, no newline) | "cut" | "bad"
    tail_size: int = 0


def _decode(data: bytes) -> tuple[Any, str | None, bool]:
    """``(value, problem, blank)`` of one line's bytes."""
    decoded = list(_jsonl.split_lines(data))
    if not decoded:
        return None, None, True
    result = _jsonl.loads_line(decoded[0][1])
    return result.value, result.problem, False


def scan_output(path: Path, label: str, what: str = "output file") -> _Scan:
    scan = _Scan()
    lines = read_lines(path, label=label, what=what, max_bytes=MAX_OUTPUT_BYTES, max_line=MAX_OUTPUT_LINE)
    for raw in lines:
        value: Any = None
        problem: str | None = f"line too long ({raw.size} bytes)"
        if raw.data is not None:
            value, problem, blank = _decode(raw.data)
            if blank:
                continue
        row_like = isinstance(value, dict) and isinstance(value.get("id"), str)
        if is_log_record(value):  # a policy record: ours, but not a result row
            if raw.complete:
                scan.records.append(value)
                scan.batch_rows += 1
                continue
        elif raw.complete or is_batch_row(value):
            if row_like:
                scan.rows[record_key(value)] = value
            if is_batch_row(value):
                scan.batch_rows += 1
                if not raw.complete:
                    scan.tail, scan.tail_size = "row", raw.size
                continue
            scan.foreign += 1
            if scan.first_foreign is None:
                scan.first_foreign = raw.number
                scan.problem = f"line {raw.number}: {problem or _NOT_A_ROW}"
            continue
        scan.tail_size = raw.size
        if row_like and not is_log_record(value):  # a hand-written last line without a newline: still read
            scan.rows[record_key(value)] = value
        # a row cut short is never valid JSON: a complete JSON value here is someone's file, not a cut row
        if raw.data is not None and problem is not None and _cut_row(raw.data, anywhere=scan.batch_rows > 0):
            scan.tail = "cut"
        else:
            scan.tail = "bad"
            if scan.problem is None:
                scan.problem = f"line {raw.number} (the last, no newline): {problem or _NOT_A_ROW}"
    return scan


#: The start of every row as edgejudge writes it (json.dumps of ``base_row``): what a cut-off row begins with.
_ROW_START: tuple[str | tuple[str, ...], ...] = (
    '{"id": ',
    "STRING",
    ', "line": ',
    "INT",
    ', "status": ',
    ('"ok"', '"error"'),
    ', "',
)


def _cut_row(data: bytes, *, anywhere: bool) -> bool:
    """True when ``data`` (no newline) can be a row cut short by a crash (see the module docstring)."""
    if _CONTROL.search(data) or not data.startswith(b'{"id": "' if not anywhere else b"{"):
        return False
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
    except UnicodeDecodeError:
        return False
    pos = 0
    for part in _ROW_START:
        rest = text[pos:]
        if not rest:
            return True
        if part == "STRING":
            if rest[0] != '"':
                return False
            i = 1
            while i < len(rest) and rest[i] != '"':
                i += 2 if rest[i] == "\\" else 1
            if i >= len(rest):
                return True  # cut inside the id
            pos += i + 1
        elif part == "INT":
            digits = len(rest) - len(rest.lstrip("0123456789"))
            if digits == len(rest):
                return True
            if digits == 0:
                return False
            pos += digits
        else:
            for option in part if isinstance(part, tuple) else (part,):
                if rest.startswith(option):
                    pos += len(option)
                    break
                if option.startswith(rest):
                    return True
            else:
                return False
    return True


def _require_batch_log(scan: _Scan, label: str) -> None:
    """Raise ``InputError`` unless the scanned non-empty file may be appended to and repaired."""
    evidence = scan.batch_rows > 0 or (scan.tail == "cut" and scan.foreign == 0)
    if not evidence:
        why = scan.problem or "no line is a batch row"
        raise InputError(
            f"{label} is not an edgejudge batch log ({why}); it was left as it was",
            hint="write to a new output file, or to the output of an earlier batch run",
            about="output",
        )
    if scan.tail == "bad":
        raise InputError(
            f"{label} does not end in a complete line and its last line is not a batch row cut short; "
            "it was left as it was",
            hint="end the file with a newline or remove its last line, or write to another output file",
            about="output",
        )
    if scan.tail == "cut" and scan.foreign:
        raise InputError(
            f"{label} ends in a batch row cut short, but line {scan.first_foreign} is not a batch row, so "
            "nothing was cut",
            hint="remove the incomplete last line by hand (or write to another output file)",
            about="output",
        )


def output_state(input_path: Path | None, output: Path) -> os.stat_result | None:
    """Path checks on the output: not a folder/FIFO/device, not the input, its folder made and writable.
    Returns the output's stat, ``None`` when it does not exist yet."""
    try:
        info: os.stat_result | None = os.stat(output)
    except FileNotFoundError:
        info = None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(
            f"cannot write the output {output}: {reason}",
            hint="write the output into a folder you can write to",
            about="output",
        ) from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise InputError(
            f"the output path is a folder: {output}", hint="pass a file name, e.g. out.jsonl", about="output"
        )
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise InputError(
            f"the output is {_fs.describe_kind(info.st_mode)}, not a regular file: {output}",
            hint="pass a file name, e.g. out.jsonl",
            about="output",
        )
    if input_path is not None and info is not None and _fs.same_file(input_path, output):
        raise InputError(
            f"the output file is the input file: {output}",
            hint="write to another output file (another name of the input, a link to it, counts too)",
            about="output",
        )
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(
            f"cannot write the output {output}: {err.strerror or err}",
            hint="write the output into a folder you can write to",
            about="output",
        ) from None
    target, mode = (output, os.W_OK) if info is not None else (output.parent, os.W_OK | os.X_OK)
    if not os.access(target, mode):
        raise InputError(
            f"cannot write the output {output}: permission denied",
            hint="write the output into a folder you can write to",
            about="output",
        )
    return info


def check_output(input_path: str | Path | None, output_path: str | Path) -> None:
    """Fail early (before a model is loaded) unless ``output_path`` can be appended to: a regular file
    (or a new name in a folder that exists or can be made; the folder is made), writable, not the input
    (same device + inode), and, when it exists and is not empty, an edgejudge batch log that needs no repair
    or can be repaired (see the module docstring). Creates no file; reads the output, changes nothing."""
    output = _fs.user_path(output_path, what="output path")
    source = None if input_path is None else _fs.user_path(input_path, what="input path")
    info = output_state(source, output)
    if info is not None and info.st_size > 0:
        _require_batch_log(scan_output(output, str(output)), str(output))


def repair_output(path: str | Path, *, lock: OutputLock | None = None) -> int:
    """Make a batch log end in a complete line; return the bytes cut (0 if none).

    A missing or empty file, or one ending in a newline, is left alone (0). Otherwise the file must be an
    edgejudge batch log whose last line is a row cut short (every rule in the module docstring): then the
    bytes after the last newline are cut (``ftruncate``, fsync). A last line that is a whole row lacking
    only its newline gets the newline (0 bytes cut). Anything else raises ``InputError`` and the file is
    left byte for byte as it was. Runs under the output's lock (``lock``, or taken here).
    """
    output = _fs.user_path(path, what="output path")
    if lock is not None and lock.covers(output):
        return repair_locked(output, None)[0]
    with OutputLock(output):
        return repair_locked(output, None)[0]


def repair_locked(
    output: Path, fd: int | None, scan: _Scan | None = None, info: os.stat_result | None = None
) -> tuple[int, str | None]:
    """Repair ``output`` (under its lock) through ``fd`` when given; ``(bytes cut, message or None)``.
    ``scan`` and ``info`` (the file's stat taken before that scan) are reused when the caller has them."""
    if info is None:
        try:
            info = os.stat(output)
        except FileNotFoundError:
            return 0, None
        except OSError as exc:
            raise InputError(f"cannot read the output file {output}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"the output is {_fs.describe_kind(info.st_mode)}, not a regular file: {output}")
    if info.st_size == 0:
        return 0, None
    if scan is None:
        probe, _ = _fs.open_regular(output, label=str(output), what="output file", max_bytes=None)
        try:
            last = os.pread(probe, 1, info.st_size - 1)
        finally:
            os.close(probe)
        if last == b"\n":
            return 0, None
        scan = scan_output(output, str(output))
    _require_batch_log(scan, str(output))
    if scan.tail in ("none",):
        return 0, None
    own = fd is None
    if own:
        fd = open_output(output, create=False)
    assert fd is not None
    try:
        now = os.fstat(fd)
        try:
            named = os.stat(output)  # the file scanned by name is still the one repaired through fd
        except OSError:
            named = None
        if (
            named is None
            or not os.path.samestat(now, info)
            or not os.path.samestat(now, named)
            or now.st_size != info.st_size
            or now.st_mtime_ns != info.st_mtime_ns
        ):
            raise InputError(
                f"{output} changed while it was checked; nothing was repaired", hint="run it again"
            )
        if scan.tail == "row":
            write_all(fd, b"\n")
            os.fsync(fd)
            return 0, f"added the missing newline at the end of {output}"
        keep = info.st_size - scan.tail_size
        os.ftruncate(fd, keep)
        os.fsync(fd)
        return scan.tail_size, f"cut a truncated last line ({scan.tail_size} bytes) off {output}"
    finally:
        if own:
            os.close(fd)


def open_output(output: Path, *, create: bool) -> int:
    """The output opened for appending, a regular file, with an exclusive flock (another name of the same
    file held by another run is refused: ``OutputBusyError``)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_CREAT if create else 0)
    try:
        fd = os.open(output, flags, 0o644)
    except OSError as exc:
        raise InputError(
            f"cannot write the output {output}: {exc.strerror or exc}",
            hint="write the output into a folder you can write to",
            about="output",
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"the output is {_fs.describe_kind(info.st_mode)}, not a regular file: {output}")
        os.set_blocking(fd, True)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputBusyError(
                f"{output} is already being written by another edgejudge (under another name of the file)",
                hint="wait for that run to finish or stop it, or write to another output file",
                about="output",
            ) from None
        except OSError:  # a file system without flock: the lock file still guards this name
            pass
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_results(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a batch output file into ``{id: row}``, the LAST row for each id winning (keys are
    ``result.record_key``: a rule row of a policy batch is keyed ``json.dumps([id, rule_id])``; policy
    records are left out).

    Lines that are not JSON objects with a string ``id`` (a truncated last line, hand edits, hostile lines:
    deep nesting, huge numbers, invalid UTF-8, over-long lines) are ignored; lone surrogates are replaced
    with U+FFFD. A missing file gives an empty dict. Raises ``InputError`` only when the path is not a
    regular file (folder, FIFO, device) or is over ``MAX_OUTPUT_BYTES``.
    """
    output = _fs.user_path(path, what="results path")
    try:
        os.stat(output)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        pass  # open_regular says what is wrong
    return scan_output(output, str(output)).rows


def read_result_rows(path: str | Path) -> dict[str, ResultRow]:
    """``read_results`` as ``ResultRow`` records (``ResultRow.from_dict``, the tolerant reader: rows of older
    versions and hand-edited rows become records, never an error)."""
    return {row_id: ResultRow.from_dict(row) for row_id, row in read_results(path).items()}
