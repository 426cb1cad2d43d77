"""Building llama.cpp's ``llama-server`` from the pinned llama-cpp-python sdist, cached by llama.cpp commit.

The server is built from the llama.cpp tree vendored in the sdist of the llama-cpp-python version
installed here (the same llama.cpp code the local engine runs, so converted pairs and their CLS
compensation work unchanged). Steps, each reported through the ``progress`` callback as a
``BuildProgress``: download the sdist with pip (kept in ``<cache>/llama-server/src``), extract it safely
into a temp folder inside the cache, read the vendored tree's commit, configure it with cmake
(``CMAKE_FLAGS`` plus the caller's extra arguments), build the ``llama-server`` target, install the binary
atomically into ``<cache>/llama-server/<key>/llama-server``, remove the temp folder.

``key`` is the commit's first 12 hex digits, plus ``-<hash>`` of the extra cmake arguments when there are
any (a CUDA build and a CPU build live side by side). The commit of the pinned version is known
(``KNOWN_COMMITS``), so a cached binary is found without downloading anything; a cached binary means no
download and no build. The build log is kept at ``<cache>/llama-server/logs/<key>.log``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TextIO

from . import config
from ._fs import atomic_write
from .errors import EngineError

__all__ = [
    "CMAKE_FLAGS",
    "KNOWN_COMMITS",
    "BINARY_NAME",
    "BuildProgress",
    "BuildResult",
    "build_server",
    "cache_key",
    "cached_binary",
    "server_root",
    "pinned_version",
    "parse_build_percent",
]

CMAKE_FLAGS: tuple[str, ...] = (
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DGGML_NATIVE=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DCMAKE_BUILD_TYPE=Release",
)
"""The configure flags of every build (the caller's extra arguments come after them, so they win)."""

KNOWN_COMMITS: dict[str, str] = {"0.3.36": "0c1e57098bba43ac29e6e3b677cdceebdd22334f"}
"""llama-cpp-python version → the llama.cpp commit its sdist vendors (checked by reading the sdist)."""

PACKAGE = "llama-cpp-python"
BINARY_NAME = "llama-server.exe" if sys.platform == "win32" else "llama-server"
_PERCENT = re.compile(r"^\[\s*(\d{1,3})%\]")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class BuildProgress:
    """One step of a build: ``stage`` is ``download``, ``extract``, ``configure``, ``build`` or ``install``;
    ``percent`` the build's own progress (0-100) during ``build``, else None; ``line`` the tool's output
    line it came from (or a short description of the step)."""

    stage: str
    percent: int | None = None
    line: str = ""


@dataclass(frozen=True)
class BuildResult:
    """A built (or cached) server: ``binary`` its path, ``commit`` the llama.cpp commit (40 hex), ``key``
    its cache folder's name, ``cmake_args`` the extra arguments, ``cached`` True when nothing was
    downloaded or built, ``log`` the build log (None for a cache hit)."""

    binary: Path
    commit: str
    key: str
    cmake_args: tuple[str, ...]
    cached: bool
    log: Path | None = None


def server_root() -> Path:
    """``<cache>/llama-server``: the built binaries, the sdist and the build logs."""
    return config.cache_dir() / "llama-server"


def pinned_version() -> str:
    """The installed llama-cpp-python's version: the sdist the server is built from."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError as exc:  # pragma: no cover - a broken install
        raise EngineError(
            f"{PACKAGE} is not installed, so there is no pinned llama.cpp to build llama-server from",
            hint=f"reinstall edgejudge (it depends on {PACKAGE})",
        ) from exc


def cache_key(commit: str, cmake_args: Sequence[str] = ()) -> str:
    """The cache folder name of a build: 12 hex of the commit, plus a short hash of the extra arguments."""
    key = commit[:12]
    if cmake_args:
        digest = hashlib.sha256("\0".join(cmake_args).encode("utf-8")).hexdigest()[:10]
        key += f"-{digest}"
    return key


def cached_binary(commit: str, cmake_args: Sequence[str] = ()) -> Path | None:
    """The cached binary of that build, or None when it was never built here."""
    binary = server_root() / cache_key(commit, cmake_args) / BINARY_NAME
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


def parse_build_percent(line: str) -> int | None:
    """The percentage of a cmake/make progress line (``[ 58%] Building CXX object ...`` → 58), else None."""
    match = _PERCENT.match(line.strip())
    if match is None:
        return None
    value = int(match.group(1))
    return value if value <= 100 else None


Progress = Callable[[BuildProgress], None]


def _quiet(event: BuildProgress) -> None:
    return None


def build_server(
    *,
    cmake_args: Sequence[str] = (),
    force: bool = False,
    jobs: int | None = None,
    progress: Progress | None = None,
    version: str | None = None,
) -> BuildResult:
    """Build llama-server for the installed llama-cpp-python ``version`` (or return the cached one).

    ``cmake_args`` are extra configure arguments (``-DGGML_CUDA=ON`` …); ``force`` rebuilds even when a
    binary is cached; ``jobs`` is the build's parallelism (default: the available cores). Raises
    ``EngineError`` when a tool is missing, the download fails or the build fails (the log is kept).
    """
    report = progress or _quiet
    extra = tuple(cmake_args)
    version = version or pinned_version()
    known = KNOWN_COMMITS.get(version)
    if known is not None and not force:
        hit = cached_binary(known, extra)
        if hit is not None:
            return BuildResult(hit, known, cache_key(known, extra), extra, cached=True)
    cmake, _ = _check_tools()
    root = server_root()
    root.mkdir(parents=True, exist_ok=True)
    sdist = _download(version, root / "src", report)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=root))
    try:
        report(BuildProgress("extract", line=f"extracting {sdist.name}"))
        tree = _extract(sdist, work / "src")
        commit = _commit_of(tree)
        key = cache_key(commit, extra)
        if not force:
            hit = cached_binary(commit, extra)
            if hit is not None:
                return BuildResult(hit, commit, key, extra, cached=True)
        (root / "logs").mkdir(exist_ok=True)
        log = root / "logs" / f"{key}.log"
        build = work / "build"
        with log.open("w", encoding="utf-8") as log_file:
            report(BuildProgress("configure", line="configuring llama.cpp with cmake"))
            _run(
                [cmake, "-S", str(tree), "-B", str(build), *CMAKE_FLAGS, *extra],
                log_file,
                log,
                "configure",
                report,
            )
            steps = ["--build", str(build), "--target", "llama-server", "--config", "Release"]
            _run([cmake, *steps, "-j", str(jobs or _cores())], log_file, log, "build", report)
        built = _find_built(build)
        if built is None:
            raise EngineError(
                f"the build finished but left no {BINARY_NAME} (log: {log})",
                hint="read the log; report it with the log attached",
            )
        _check_runs(built, log)
        report(BuildProgress("install", line=f"installing {BINARY_NAME}"))
        binary = _install(built, root / key, commit=commit, version=version, cmake_args=extra)
        return BuildResult(binary, commit, key, extra, cached=False, log=log)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _check_tools() -> tuple[str, str]:
    """(cmake, C++ compiler) paths, or an error naming what to install."""
    cmake = shutil.which("cmake")
    if cmake is None:
        raise EngineError(
            "cmake is not installed: it is needed to build llama-server",
            hint="install it (Debian/Ubuntu: apt-get install cmake; macOS: brew install cmake; "
            "or pip install cmake)",
        )
    compiler = os.environ.get("CXX", "").strip()
    found = shutil.which(compiler) if compiler else None
    for name in ("c++", "g++", "clang++"):
        found = found or shutil.which(name)
    if found is None:
        raise EngineError(
            "no C++ compiler found (c++, g++ or clang++): one is needed to build llama-server",
            hint="install one (Debian/Ubuntu: apt-get install build-essential; "
            "macOS: xcode-select --install)",
        )
    if (
        not os.environ.get("CMAKE_GENERATOR")
        and shutil.which("make") is None
        and shutil.which("ninja") is None
    ):
        raise EngineError(
            "neither make nor ninja is installed: cmake needs one to build llama-server",
            hint="install make (Debian/Ubuntu: apt-get install build-essential) or ninja",
        )
    return cmake, found


def _download(version: str, dest: Path, report: Progress) -> Path:
    """The sdist of ``version`` in ``dest`` (downloaded with pip unless it is already there)."""
    name = f"llama_cpp_python-{version}.tar.gz"
    sdist = dest / name
    if sdist.is_file():
        return sdist
    dest.mkdir(parents=True, exist_ok=True)
    report(BuildProgress("download", line=f"downloading the {PACKAGE} {version} source (about 76 MB)"))
    spec = f"{PACKAGE}=={version}"
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        spec,
        "-d",
        str(dest),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, errors="replace", check=False)
    if proc.returncode != 0 or not sdist.is_file():
        tail = _last_line(proc.stderr) or _last_line(proc.stdout) or f"exit status {proc.returncode}"
        raise EngineError(
            f"could not download the {PACKAGE} {version} source with pip: {tail}",
            hint=f"check the network (pip must reach the package index), or put {name} into {dest} yourself",
        )
    return sdist


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _extract(sdist: Path, dest: Path) -> Path:
    """Extract the sdist into ``dest`` (tar's "data" filter: no links out, no devices) → vendor/llama.cpp."""
    if not hasattr(tarfile, "data_filter"):  # pragma: no cover - Python 3.10 before 3.10.12
        raise EngineError(
            f"this Python ({sys.version.split()[0]}) cannot extract an archive safely (no tarfile filters)",
            hint="use Python 3.10.12, 3.11.4 or newer",
        )
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            archive.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise EngineError(
            f"the source archive {sdist} cannot be extracted: {exc}",
            hint="delete it so that it is downloaded again",
        ) from exc
    tops = [p for p in dest.iterdir() if p.is_dir()]
    tree = tops[0] / "vendor" / "llama.cpp" if len(tops) == 1 else dest / "missing"
    if not (tree / "CMakeLists.txt").is_file():
        raise EngineError(
            f"the source archive {sdist} holds no vendor/llama.cpp tree",
            hint="delete it so that it is downloaded again",
        )
    return tree


def _commit_of(tree: Path) -> str:
    """The llama.cpp commit of the extracted tree (the sdist carries the submodule's git folder)."""
    if shutil.which("git"):
        proc = subprocess.run(
            ["git", "-c", f"safe.directory={tree}", "-C", str(tree), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
        )
        commit = proc.stdout.strip()
        if proc.returncode == 0 and _HEX40.match(commit):
            return commit
    head = _head_file(tree)
    if head is not None:
        return head
    raise EngineError(
        f"cannot tell which llama.cpp commit {tree} holds",
        hint="install git, or delete the source archive so that it is downloaded again",
    )


def _head_file(tree: Path) -> str | None:
    """A detached HEAD read from the tree's git folder (``.git`` is a folder or a ``gitdir:`` file)."""
    dot = tree / ".git"
    try:
        if dot.is_file():
            pointer = dot.read_text(encoding="utf-8").strip()
            if not pointer.startswith("gitdir:"):
                return None
            dot = (tree / pointer.removeprefix("gitdir:").strip()).resolve()
        head = (dot / "HEAD").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return head if _HEX40.match(head) else None


def _run(argv: list[str], log_file: TextIO, log: Path, stage: str, report: Progress) -> None:
    """Run one build step, its output appended to the log; progress lines reported as they come."""
    log_file.write("$ " + " ".join(argv) + "\n")
    log_file.flush()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            log_file.write(line)
            log_file.flush()  # readable while the build runs (tail -f)
            report(
                BuildProgress(stage, parse_build_percent(line) if stage == "build" else None, line.rstrip())
            )
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        log_file.flush()
    if code != 0:
        raise EngineError(
            f"the llama-server {stage} step failed (exit status {code}); the log is {log}",
            hint="read the end of the log: a missing library or toolkit (CUDA, Metal) is named there; "
            "check the extra cmake arguments",
        )


def _check_runs(binary: Path, log: Path) -> None:
    """The new binary starts and reports its version (a missing runtime library shows here)."""
    try:
        proc = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"the built llama-server does not run: {exc}", hint=f"read the log: {log}") from exc
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 or "version" not in output:
        raise EngineError(
            f"the built llama-server does not run as expected (exit status {proc.returncode}): "
            f"{_last_line(output) or 'no output'}",
            hint="a runtime library (libgomp, libstdc++, a GPU toolkit) may be missing; the build log is "
            f"{log}",
        )


def _find_built(build: Path) -> Path | None:
    for candidate in (build / "bin" / BINARY_NAME, build / "bin" / "Release" / BINARY_NAME):
        if candidate.is_file():
            return candidate
    return None


def _install(built: Path, folder: Path, *, commit: str, version: str, cmake_args: tuple[str, ...]) -> Path:
    """Copy the binary into its cache folder atomically (readers see no binary or the whole one)."""
    folder.mkdir(parents=True, exist_ok=True)
    about = {"llama_cpp_python": version, "commit": commit, "cmake_args": list(cmake_args)}
    atomic_write(folder / "build.json", (json.dumps(about, indent=2) + "\n").encode("utf-8"))
    target = folder / BINARY_NAME
    with built.open("rb") as source:
        atomic_write(target, lambda handle: shutil.copyfileobj(source, handle), mode=0o755)
    return target
