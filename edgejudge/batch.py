"""Batch evaluation: a JSONL file of judging tasks in, an append-only JSONL file of verdicts out, resumable.

Owns: reading batch input rows (native and Perception-Collection/Bench fields), content-hash keys, resume,
the output row format, the output lock, crash repair of the output file and the judging loop. Nothing here
prints: progress reaches the UI as ``BatchEvent`` values through ``on_event``.

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
  no complete row) and every complete line of the file a batch row. Then they are cut (``ftruncate``, one
  system call, fsync). A last row complete but for its newline gets the newline instead (nothing cut).
- The output is never the input (compared as files: device + inode, so hard links, symlinks and other
  spellings are caught), never a folder, FIFO or device.
- **One writer**: ``run_batch`` holds an exclusive ``flock`` on ``<output>.lock`` (beside the output's real
  path; the pid inside, for the message) for the whole run, and a second ``flock`` on the output file itself
  (so a hard-linked name is caught too). A second run gets "already being written by another edgejudge
  (pid N)". The kernel drops the locks when a run dies, so a stale lock file never blocks; the lock file is
  removed at the end of a run.
- An input with no rows creates no output file.
"""

from __future__ import annotations

import codecs
import fcntl
import os
import re
import stat
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _fs, _jsonl
from ._batch_rows import (
    BatchRow,
    base_row,
    error_row,
    image_digest,
    is_batch_row,
    ok_row,
    read_input_rows,
    read_lines,
    resolve_image,
    row_key,
    schedule,
)
from .engine.base import GenerationParams
from .errors import EdgeJudgeError, InputError

if TYPE_CHECKING:
    from .images import FittedImage
    from .judge import Judge, Task
    from .rubric import Rubric

__all__ = [
    "BatchEvent",
    "BatchSummary",
    "BatchRow",
    "EventFn",
    "OutputLock",
    "MAX_OUTPUT_BYTES",
    "run_batch",
    "read_results",
    "repair_output",
    "check_output",
    "is_batch_row",
    "settings_of",
]

#: An output (results) file is read only when it is a regular file of at most this size.
MAX_OUTPUT_BYTES = 16 * 2**30
#: A longer line of an output file is not a batch row (rows hold a few KB; inputs lines are at most 16 MiB).
MAX_OUTPUT_LINE = 64 * 2**20
_CONTROL = re.compile(rb"[\x00-\x1f]")
_NOT_A_ROW = "not a JSON object with the batch row fields"


@dataclass(frozen=True)
class BatchEvent:
    """Progress of a batch, for the UI.

    ``kind`` is one of ``"repaired"`` (a truncated last line was cut off the output, or a missing final
    newline added: ``message``), ``"ignored"`` (complete lines of the output that are not batch rows are
    ignored: ``message``, ``line`` the first of them), ``"started"`` (``total`` rows in the input,
    ``skipped`` already done, ``todo`` to judge),
    ``"row_done"`` (``row`` the output row just written, ``status``, ``score``, ``done`` rows so far),
    ``"error"`` (an error row was written: ``message``, ``line``, ``row``) and ``"finished"`` (``summary``).
    """

    kind: str
    total: int = 0
    skipped: int = 0
    todo: int = 0
    done: int = 0
    row: Mapping[str, Any] | None = None
    status: str | None = None
    score: int | None = None
    message: str | None = None
    line: int | None = None
    summary: BatchSummary | None = None


EventFn = Callable[[BatchEvent], None]


@dataclass(frozen=True)
class BatchSummary:
    """What one ``run_batch`` call did.

    ``total`` rows in the input (after ``limit``), ``skipped`` already done by an earlier run, ``judged``
    rows written by this run (``ok`` + ``errors``), ``malformed`` of them bad JSON lines, ``remaining`` rows
    left when the run was stopped early (``stopped``). ``histogram`` counts this run's scores 1..5 (keys
    "1".."5"), ``mean_score`` their mean. ``repaired`` is the number of bytes of a truncated last line cut
    off the output before starting. ``ignored_lines`` counts complete lines of the output that are not
    batch rows (ignored by resume and ``read_results``); ``warned`` the rows written with input warnings
    (text replaced: invalid UTF-8, lone surrogates).
    """

    input: str
    output: str
    total: int
    skipped: int
    judged: int
    ok: int
    errors: int
    malformed: int
    remaining: int
    stopped: bool
    repaired: int
    elapsed_s: float
    histogram: dict[str, int] = field(default_factory=dict)
    mean_score: float | None = None
    ignored_lines: int = 0
    warned: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class OutputLock:
    """An exclusive lock on one batch output: ``flock`` on ``<output>.lock`` beside the output's real path.

    ``acquire`` raises ``InputError`` "… is already being written by another edgejudge (pid N)" when
    another process holds it (never waits). The lock file holds the holder's pid; ``release`` removes it.
    A lock file left by a killed run is not held by anyone (the kernel released the flock) and is taken
    over. Use as a context manager, or pass an acquired lock to ``run_batch``/``repair_output``.
    """

    def __init__(self, output: str | Path) -> None:
        self.output = _fs.user_path(output, what="output path")
        real = Path(os.path.realpath(self.output))
        self.path = real.with_name(real.name + ".lock")
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
                hint="pass an --output path in a folder you can write to",
            ) from None
        for _ in range(50):
            try:
                flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
                fd = os.open(self.path, flags, 0o644)
            except OSError as exc:
                raise InputError(
                    f"cannot lock the output {self.output}: cannot create {self.path}: {exc.strerror or exc}",
                    hint="pass an --output path in a folder you can write to",
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                raise InputError(
                    f"{self.output} is already being written by another edgejudge (pid {pid or 'unknown'})",
                    hint="wait for that run to finish or stop it, or pass another --output",
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


@dataclass
class _Scan:
    """What one pass over an output file found (see the module docstring for the rules)."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
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


def _scan_output(path: Path, label: str) -> _Scan:
    scan = _Scan()
    lines = read_lines(
        path, label=label, what="output file", max_bytes=MAX_OUTPUT_BYTES, max_line=MAX_OUTPUT_LINE
    )
    for raw in lines:
        value: Any = None
        problem: str | None = f"line too long ({raw.size} bytes)"
        if raw.data is not None:
            value, problem, blank = _decode(raw.data)
            if blank:
                continue
        row_like = isinstance(value, dict) and isinstance(value.get("id"), str)
        if raw.complete or is_batch_row(value):
            if row_like:
                scan.rows[value["id"]] = value
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
        if row_like:  # a hand-written last line without a newline: readers still see it
            scan.rows[value["id"]] = value
        if raw.data is not None and _cut_row(raw.data, anywhere=scan.batch_rows > 0):
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
            hint="pass a new --output file, or the OUT.jsonl of an earlier edgejudge batch",
        )
    if scan.tail == "bad":
        raise InputError(
            f"{label} does not end in a complete line and its last line is not a batch row cut short; "
            "it was left as it was",
            hint="end the file with a newline or remove its last line, or pass another --output",
        )
    if scan.tail == "cut" and scan.foreign:
        raise InputError(
            f"{label} ends in a batch row cut short, but line {scan.first_foreign} is not a batch row, so "
            "nothing was cut",
            hint="remove the incomplete last line by hand (or pass another --output)",
        )


def _output_state(input_path: Path | None, output: Path) -> os.stat_result | None:
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
            hint="pass an --output path in a folder you can write to",
        ) from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise InputError(f"the output path is a folder: {output}", hint="pass a file name, e.g. out.jsonl")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise InputError(
            f"the output is {_fs.describe_kind(info.st_mode)}, not a regular file: {output}",
            hint="pass a file name, e.g. out.jsonl",
        )
    if input_path is not None and info is not None and _fs.same_file(input_path, output):
        raise InputError(
            f"the output file is the input file: {output}",
            hint="pass a different --output path (another name of the input, a link to it, counts too)",
        )
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(
            f"cannot write the output {output}: {err.strerror or err}",
            hint="pass an --output path in a folder you can write to",
        ) from None
    target, mode = (output, os.W_OK) if info is not None else (output.parent, os.W_OK | os.X_OK)
    if not os.access(target, mode):
        raise InputError(
            f"cannot write the output {output}: permission denied",
            hint="pass an --output path in a folder you can write to",
        )
    return info


def check_output(input_path: str | Path | None, output_path: str | Path) -> None:
    """Fail early (before a model is loaded) unless ``output_path`` can be appended to: a regular file
    (or a new name in a folder that exists or can be made; the folder is made), writable, not the input
    (same device + inode), and, when it exists and is not empty, an edgejudge batch log that needs no repair
    or can be repaired (see the module docstring). Creates no file; reads the output, changes nothing."""
    output = _fs.user_path(output_path, what="output path")
    source = None if input_path is None else _fs.user_path(input_path, what="input path")
    info = _output_state(source, output)
    if info is not None and info.st_size > 0:
        _require_batch_log(_scan_output(output, str(output)), str(output))


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
        return _repair_locked(output, None)[0]
    with OutputLock(output):
        return _repair_locked(output, None)[0]


def _repair_locked(
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
        scan = _scan_output(output, str(output))
    _require_batch_log(scan, str(output))
    if scan.tail in ("none",):
        return 0, None
    own = fd is None
    if own:
        fd = _open_output(output, create=False)
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
            _write_all(fd, b"\n")
            os.fsync(fd)
            return 0, f"added the missing newline at the end of {output}"
        keep = info.st_size - scan.tail_size
        os.ftruncate(fd, keep)
        os.fsync(fd)
        return scan.tail_size, f"cut a truncated last line ({scan.tail_size} bytes) off {output}"
    finally:
        if own:
            os.close(fd)


def _open_output(output: Path, *, create: bool) -> int:
    """The output opened for appending, a regular file, with an exclusive flock (another name of the same
    file held by another run is refused)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_CREAT if create else 0)
    try:
        fd = os.open(output, flags, 0o644)
    except OSError as exc:
        raise InputError(
            f"cannot write the output {output}: {exc.strerror or exc}",
            hint="pass an --output path in a folder you can write to",
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"the output is {_fs.describe_kind(info.st_mode)}, not a regular file: {output}")
        os.set_blocking(fd, True)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"{output} is already being written by another edgejudge (under another name of the file)",
                hint="wait for that run to finish or stop it, or pass another --output",
            ) from None
        except OSError:  # a file system without flock: the lock file still guards this name
            pass
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_results(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a batch output file into ``{id: row}``, the LAST row for each id winning.

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
    return _scan_output(output, str(output)).rows


def settings_of(judge: Judge, params: GenerationParams, samples: int) -> dict[str, Any]:
    """The settings that change a verdict; part of every row's key and written to every output row."""
    return {
        "model": judge.engine.model_name,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "seed": params.seed,
        "samples": samples,
        "max_tokens": params.max_tokens,
        "repeat_penalty": params.repeat_penalty,
        "image_fit": judge.image_fit,
        "grammar": params.constrained,
    }


def run_batch(
    judge: Judge,
    input_path: str | Path,
    output_path: str | Path,
    *,
    image_root: str | Path | None = None,
    default_rubric: Rubric | str | None = None,
    limit: int | None = None,
    retry_errors: bool = False,
    samples: int = 1,
    params: GenerationParams | None = None,
    on_event: EventFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    lock: OutputLock | None = None,
) -> BatchSummary:
    """Judge every row of ``input_path`` not already done in ``output_path``; append the verdicts there.

    ``image_root`` resolves relative image paths (default: the input file's folder). ``default_rubric``
    serves rows without their own. ``limit`` keeps only the first N input rows. Rows whose key (id + hash
    of inputs and settings) has an ``ok`` row in the output are skipped; error rows too unless
    ``retry_errors``. Bad rows become ``error`` rows and the batch goes on. ``should_stop`` is checked
    between groups of rows: when it returns True the batch stops after the rows in flight (already written;
    up to the engine's ``max_parallel`` rows on one image are judged together, one row with a plain engine).
    The whole run holds the output's lock (``lock`` when the caller already holds it, else taken here).
    Paths expand ``~``. An input with no rows to judge creates no output file.
    Raises ``InputError`` only when the input file cannot be read, or the output is not an edgejudge batch
    log, cannot be written or is being written by another run.
    """
    output = _fs.user_path(output_path, what="output path")
    held = lock is not None and lock.covers(output)
    with nullcontext() if held else OutputLock(output):
        return _run_locked(
            judge, input_path, output, image_root, default_rubric, limit, retry_errors, samples, params,
            on_event, should_stop,
        )  # fmt: skip


def _run_locked(
    judge: Judge,
    input_path: str | Path,
    output_path: Path,
    image_root: str | Path | None,
    default_rubric: Rubric | str | None,
    limit: int | None,
    retry_errors: bool,
    samples: int,
    params: GenerationParams | None,
    on_event: EventFn | None,
    should_stop: Callable[[], bool] | None,
) -> BatchSummary:
    started = time.perf_counter()
    input_path = _fs.user_path(input_path, what="input path")
    root = (
        _fs.user_path(image_root, what="image root") if image_root is not None else input_path.parent
    ).absolute()
    params = params or GenerationParams()
    emit = on_event or (lambda event: None)
    if samples < 1:
        raise InputError(f"samples must be at least 1, got {samples}", hint="pass --samples 1 or more")
    info = _output_state(input_path, output_path)
    fd: int | None = None
    try:
        repaired = ignored = 0
        previous: dict[str, dict[str, Any]] = {}
        if info is not None:
            fd = _open_output(output_path, create=False)
            info = os.fstat(fd)
            if info.st_size > 0:
                scan = _scan_output(output_path, str(output_path))
                repaired, message = _repair_locked(output_path, fd, scan, info)
                if message:
                    emit(BatchEvent("repaired", message=message))
                previous, ignored = scan.rows, scan.foreign
                if ignored:
                    emit(
                        BatchEvent(
                            "ignored",
                            line=scan.first_foreign,
                            message=f"{ignored} line(s) of {output_path} are not batch rows and were ignored "
                            f"(first: {scan.problem})",
                        )
                    )
        rows = read_input_rows(input_path, default_rubric=default_rubric, limit=limit)
        return _judge_all(
            judge, rows, input_path, output_path, fd, root, previous, retry_errors, samples, params, emit,
            should_stop, started, repaired, ignored,
        )  # fmt: skip
    finally:
        if fd is not None:
            os.close(fd)


def _judge_all(
    judge: Judge,
    rows: list[BatchRow],
    input_path: Path,
    output_path: Path,
    fd: int | None,
    root: Path,
    previous: dict[str, dict[str, Any]],
    retry_errors: bool,
    samples: int,
    params: GenerationParams,
    emit: EventFn,
    should_stop: Callable[[], bool] | None,
    started: float,
    repaired: int,
    ignored: int,
) -> BatchSummary:
    settings = settings_of(judge, params, samples)
    digests: dict[Path, str] = {}
    todo: list[tuple[BatchRow, str, str | None]] = []
    for row in rows:
        digest = _digest(row, root, digests)
        key = row_key(row, digest, settings)
        prev = previous.get(row.id)
        if prev is not None and prev.get("key") == key and (prev.get("status") == "ok" or not retry_errors):
            continue
        todo.append((row, key, digest))
    todo = schedule(todo, root)
    skipped = len(rows) - len(todo)
    emit(BatchEvent("started", total=len(rows), skipped=skipped, todo=len(todo)))

    ok = errors = malformed = done = warned = 0
    scores: list[int] = []
    stopped = False
    group_size = max(1, int(getattr(judge.engine, "max_parallel", 1)))
    created: int | None = None
    try:
        for group in _groups(todo, group_size):
            if should_stop is not None and should_stop():
                stopped = True
                break
            results = _judge_rows(judge, group, root, settings, samples, params)
            if fd is None:  # the output is made only when there is a row to write
                fd = created = _open_output(output_path, create=True)
            for (row, _, _), result in zip(group, results, strict=True):
                _write_all(fd, _jsonl.dumps_line(result))
                os.fsync(fd)
                done += 1
                warned += int(bool(result.get("warnings")))
                if result["status"] == "ok":
                    ok += 1
                    if result["score"] is not None:
                        scores.append(int(result["score"]))
                else:
                    errors += 1
                    malformed += int(row.malformed)
                    emit(BatchEvent("error", row=result, message=result["error"], line=row.line, done=done))
                emit(
                    BatchEvent(
                        "row_done",
                        row=result,
                        status=result["status"],
                        score=result["score"],
                        done=done,
                        total=len(rows),
                        skipped=skipped,
                        todo=len(todo),
                        line=row.line,
                    )
                )
    finally:
        if created is not None:
            os.close(created)

    histogram = {str(k): scores.count(k) for k in range(1, 6)}
    summary = BatchSummary(
        input=str(input_path),
        output=str(output_path),
        total=len(rows),
        skipped=skipped,
        judged=done,
        ok=ok,
        errors=errors,
        malformed=malformed,
        remaining=len(todo) - done,
        stopped=stopped,
        repaired=repaired,
        elapsed_s=round(time.perf_counter() - started, 3),
        histogram=histogram,
        mean_score=round(sum(scores) / len(scores), 4) if scores else None,
        ignored_lines=ignored,
        warned=warned,
    )
    emit(BatchEvent("finished", summary=summary, total=len(rows), skipped=skipped, todo=len(todo), done=done))
    return summary


def _digest(row: BatchRow, root: Path, cache: dict[Path, str]) -> str | None:
    if row.image is None or row.problem is not None:
        return None
    path = resolve_image(row.image, root)
    if path not in cache:
        cache[path] = image_digest(path)
    return cache[path]


def _groups(
    todo: list[tuple[BatchRow, str, str | None]], size: int
) -> list[list[tuple[BatchRow, str, str | None]]]:
    """Consecutive judgeable rows on the same image, ``size`` at most (decoded as parallel sequences);
    rows with a problem, or without an image digest, stand alone."""
    groups: list[list[tuple[BatchRow, str, str | None]]] = []
    for item in todo:
        row, _key, digest = item
        last = groups[-1] if groups else None
        if (
            last is not None
            and len(last) < size
            and digest is not None
            and row.problem is None
            and last[0][2] == digest
            and last[0][0].problem is None
        ):
            last.append(item)
        else:
            groups.append([item])
    return groups


def _row_task(
    judge: Judge, row: BatchRow, root: Path, digest: str | None, fitted: dict[str, FittedImage]
) -> Task:
    """The judge's task for a row: its image read and fitted once per image file of a group (``fitted``
    by digest); a missing, unreadable or broken image is an error."""
    from .errors import InvalidImageError
    from .images import MAX_FILE_BYTES
    from .judge import Task

    assert row.image is not None and row.instruction is not None and row.response is not None
    assert row.rubric is not None
    image = fitted.get(digest) if digest is not None else None
    if image is None:
        path = resolve_image(row.image, root)
        data = _fs.read_regular(
            path,
            label=f"{row.image} (looked at {path})",
            what="image",
            max_bytes=MAX_FILE_BYTES,
            error=InvalidImageError,
        )
        if digest is not None and digest.startswith("sha256:") and _sha256(data) != digest[len("sha256:") :]:
            raise InvalidImageError(
                f"image {row.image} changed while the batch was running (looked at {path})",
                hint="run the batch again: the row is judged with the new image",
            )
        image = judge.fit(data, name=row.image)
        if digest is not None:
            fitted[digest] = image
    return Task(image, row.instruction, row.response, row.rubric, row.reference, image_name=row.image)


def _judge_rows(
    judge: Judge,
    group: list[tuple[BatchRow, str, str | None]],
    root: Path,
    settings: dict[str, Any],
    samples: int,
    params: GenerationParams,
) -> list[dict[str, Any]]:
    """Judge a group of rows in one go; any EdgeJudgeError becomes that row's error row (never raised)."""
    began = time.perf_counter()
    results: list[dict[str, Any] | None] = [None] * len(group)
    tasks: list[Task] = []
    bases: list[tuple[int, dict[str, Any]]] = []
    fitted: dict[str, FittedImage] = {}
    for k, (row, key, digest) in enumerate(group):
        base = base_row(row, key, root, settings, judge.engine.image_size)
        if digest is not None and digest.startswith("sha256:"):
            base["image_sha256"] = digest.removeprefix("sha256:")
        if row.problem is not None:
            results[k] = error_row(base, row.problem, row.hint, began)
            continue
        try:
            tasks.append(_row_task(judge, row, root, digest, fitted))
        except EdgeJudgeError as err:
            results[k] = error_row(base, str(err), err.hint, began)
            continue
        bases.append((k, base))
    verdicts = judge.evaluate_tasks(tasks, samples=samples, params=params) if tasks else []
    for (k, base), verdict in zip(bases, verdicts, strict=True):
        if isinstance(verdict, EdgeJudgeError):
            results[k] = error_row(base, str(verdict), verdict.hint, began)
        else:
            results[k] = ok_row(base, verdict, began)
    return [r for r in results if r is not None]


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
