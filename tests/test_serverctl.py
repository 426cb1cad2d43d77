"""edgejudge.serverctl: the llama-server command line, finding and caching the binary, starting and
stopping a real llama-server on the tiny model (tests/helpers/llama_server.py)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tarfile
from pathlib import Path

import httpx
import pytest

from edgejudge import serverctl, settings
from edgejudge.errors import EngineError, InputError, ModelNotFoundError
from edgejudge.serverctl import (
    KNOWN_COMMITS,
    MEDIA_MARKER,
    BuildProgress,
    build_server,
    cache_key,
    find_server_binary,
    parse_build_percent,
    server_command,
    start_server,
)
from tests.helpers.llama_server import free_port, running_server, server_binary

COMMIT = KNOWN_COMMITS[serverctl.pinned_version()]


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty edgejudge cache folder of the test's own."""
    folder = tmp_path / "cache"
    folder.mkdir()
    monkeypatch.setenv("EDGEJUDGE_CACHE", str(folder))
    return folder


def _install_copy(cache: Path, binary: Path, key: str) -> Path:
    """A real copy of the llama-server binary where a build of ``key`` puts it."""
    target = cache / "llama-server" / key / "llama-server"
    target.parent.mkdir(parents=True)
    shutil.copy2(binary, target)
    return target


def _bare_path(tmp_path: Path) -> str:
    """A PATH holding no program at all (no cmake, no compiler, no git, no pip)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    return str(empty)


# -- the command line (pure) ------------------------------------------------------------------------


def test_server_command_composes_every_flag() -> None:
    cmd = server_command(
        "/opt/llama-server",
        "/m/judge-Q4_K_M.gguf",
        "/m/mmproj-judge-F16.gguf",
        port=8123,
        slots=3,
        ctx_per_seq=1024,
        threads=2,
        extra=["--api-key", "k"],
    )
    assert cmd.argv == (
        "/opt/llama-server",
        "-m",
        "/m/judge-Q4_K_M.gguf",
        "--mmproj",
        "/m/mmproj-judge-F16.gguf",
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
        "-np",
        "3",
        "-c",
        "3072",
        "-fa",
        "off",
        "-t",
        "2",
        "--api-key",
        "k",
    )
    assert cmd.env == {"LLAMA_MEDIA_MARKER": MEDIA_MARKER}
    assert cmd.n_ctx == 3072


def test_server_command_defaults() -> None:
    """Per-sequence context: the judge's n_ctx default; no -t unless asked; the given host kept."""
    cmd = server_command(Path("ls"), Path("t.gguf"), Path("p.gguf"), host="0.0.0.0", slots=2)
    argv = list(cmd.argv)
    assert argv[argv.index("-c") + 1] == str(2 * settings.default("n_ctx"))
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert argv[argv.index("--port") + 1] == str(serverctl.DEFAULT_PORT)
    assert "-t" not in argv


@pytest.mark.parametrize(
    ("kwargs", "about"),
    [
        ({"slots": 0}, "slots"),
        ({"ctx_per_seq": 0}, "ctx_per_seq"),
        ({"threads": 0}, "threads"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
    ],
)
def test_server_command_refuses_bad_values(kwargs: dict[str, int], about: str) -> None:
    with pytest.raises(InputError) as err:
        server_command("b", "t.gguf", "p.gguf", **kwargs)  # type: ignore[arg-type]
    assert err.value.about == (about,)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("[::1]", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("judge.example.org", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert serverctl.is_loopback(host) is loopback


# -- progress and cache keys (pure) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "percent"),
    [
        ("[ 58%] Building CXX object tools/server/CMakeFiles/server.dir/server.cpp.o", 58),
        ("[  0%] Generating build details from Git", 0),
        ("[100%] Linking CXX executable ../../bin/llama-server", 100),
        ("  [ 7%] Built target ggml-base", 7),
        ("-- Configuring done (1.2s)", None),
        ("[ 58 %] spaced", None),
        ("[999%] nonsense", None),
        ("gcc: warning [ 12%] inside a line", None),
        ("", None),
    ],
)
def test_parse_build_percent(line: str, percent: int | None) -> None:
    assert parse_build_percent(line) == percent


def test_cache_key_names_the_commit_and_the_extra_cmake_arguments() -> None:
    plain = cache_key(COMMIT)
    cuda = cache_key(COMMIT, ["-DGGML_CUDA=ON"])
    assert plain == COMMIT[:12]
    assert cuda.startswith(COMMIT[:12] + "-") and cuda != plain
    assert cache_key(COMMIT, ["-DGGML_CUDA=ON"]) == cuda  # stable
    assert cache_key(COMMIT, ["-DGGML_METAL=ON"]) != cuda
    assert cache_key(COMMIT, ["-DA=1", "-DB=2"]) != cache_key(COMMIT, ["-DA=1 -DB=2"])


# -- finding the binary -----------------------------------------------------------------------------


def test_find_server_binary_precedence(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = server_binary()
    monkeypatch.delenv("EDGEJUDGE_LLAMA_SERVER", raising=False)
    assert find_server_binary() is None  # an empty cache, no variable
    _install_copy(cache, real, cache_key(COMMIT, ["-DGGML_CUDA=ON"]))
    assert find_server_binary() is None  # a build with extra cmake arguments is never picked by itself
    cached = _install_copy(cache, real, cache_key(COMMIT))
    assert find_server_binary() == cached
    mine = tmp_path / "my-llama-server"
    monkeypatch.setenv("EDGEJUDGE_LLAMA_SERVER", str(mine))
    assert find_server_binary() == mine  # the variable first, even when it names nothing (yet)


def test_start_server_names_a_missing_binary(
    cache: Path, tiny_gguf: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGEJUDGE_LLAMA_SERVER", raising=False)
    with pytest.raises(EngineError, match="not built") as err:
        start_server(tiny_gguf[0], port=free_port())
    assert err.value.hint is not None and "edgejudge server build" in err.value.hint


# -- building: the cache ----------------------------------------------------------------------------


def test_build_is_a_cache_hit_without_download_or_tools(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached build: no pip, no cmake (PATH holds no program), nothing written, the binary runs."""
    cached = _install_copy(cache, server_binary(), cache_key(COMMIT))
    before = sorted(p.relative_to(cache) for p in cache.rglob("*"))
    monkeypatch.setenv("PATH", _bare_path(tmp_path))
    events: list[BuildProgress] = []
    result = build_server(progress=events.append)
    assert result.cached and result.binary == cached and result.commit == COMMIT and result.log is None
    assert events == []
    assert sorted(p.relative_to(cache) for p in cache.rglob("*")) == before  # no source, no temp folder
    version = subprocess.run([str(result.binary), "--version"], capture_output=True, text=True, check=True)
    assert f"commit {COMMIT[:7]}" in version.stdout + version.stderr


def test_extra_cmake_arguments_are_another_build(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With only the plain build cached, a CUDA build is not a hit: it goes on to build (and needs cmake)."""
    _install_copy(cache, server_binary(), cache_key(COMMIT))
    monkeypatch.setenv("PATH", _bare_path(tmp_path))
    with pytest.raises(EngineError, match="cmake is not installed") as err:
        build_server(cmake_args=["-DGGML_CUDA=ON"])
    assert err.value.hint is not None and "apt-get install cmake" in err.value.hint
    with pytest.raises(EngineError, match="cmake is not installed"):
        build_server(force=True)  # --force ignores the cached build


def test_build_names_a_missing_compiler(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed here")
    bin_dir = Path(_bare_path(tmp_path))
    (bin_dir / "cmake").symlink_to(cmake)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(EngineError, match="no C\\+\\+ compiler") as err:
        build_server()
    assert err.value.hint is not None and "build-essential" in err.value.hint


def test_build_reports_a_failed_download(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pip cannot reach its index (offline): one error naming the download and what to do."""
    if shutil.which("cmake") is None or shutil.which("c++") is None:
        pytest.skip("the build tools are not installed here (checked before the download)")
    with socket.socket() as closed:  # a local port nobody listens on: the index is unreachable at once
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/simple"
    for key, value in {
        "PIP_INDEX_URL": dead,
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_FIND_LINKS": "",
    }.items():
        monkeypatch.setenv(key, value)
    events: list[BuildProgress] = []
    with pytest.raises(EngineError, match="could not download the llama-cpp-python") as err:
        build_server(force=True, progress=events.append)
    assert err.value.hint is not None and "network" in err.value.hint
    assert [e.stage for e in events] == ["download"]
    assert not list((cache / "llama-server").glob("build-*"))  # no temp folder left


# -- building: the whole pipeline on a stand-in source tree -----------------------------------------
# The real llama.cpp build takes minutes (scripts/test.sh runs it through `edgejudge server build`); these
# tests run every step for real (tar extraction, the commit, cmake, the compiler, the check, the install) on
# an sdist of the same layout whose "llama.cpp" is one small C++ program named llama-server.

FAKE_VERSION = "9.9.9"
FAKE_COMMIT = "ab" * 20
FAKE_MAIN = '#include <cstdio>\nint main() { std::puts("version: 9.9.9 (build 1, commit abababa)"); }\n'
FAKE_CMAKE = """cmake_minimum_required(VERSION 3.14)
project(fake_llama CXX)
add_executable(llama-server server.cpp)
set_target_properties(llama-server PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
add_executable(other other.cpp)
"""


def _fake_sdist(cache: Path, cmakelists: str = FAKE_CMAKE) -> Path:
    """``<cache>/llama-server/src/llama_cpp_python-9.9.9.tar.gz`` laid out like the real sdist: the tree in
    ``vendor/llama.cpp`` with a ``.git`` file pointing at the submodule's git folder (a detached HEAD)."""
    top = cache / "staging" / f"llama_cpp_python-{FAKE_VERSION}"
    tree = top / "vendor" / "llama.cpp"
    tree.mkdir(parents=True)
    (tree / "CMakeLists.txt").write_text(cmakelists)
    (tree / "server.cpp").write_text(FAKE_MAIN)
    (tree / "other.cpp").write_text("int main() { return 0; }\n")
    (tree / ".git").write_text("gitdir: ../../.git/modules/vendor/llama.cpp\n")
    gitdir = top / ".git" / "modules" / "vendor" / "llama.cpp"
    gitdir.mkdir(parents=True)
    (gitdir / "HEAD").write_text(FAKE_COMMIT + "\n")
    src = cache / "llama-server" / "src"
    src.mkdir(parents=True)
    sdist = src / f"llama_cpp_python-{FAKE_VERSION}.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        archive.add(top, arcname=top.name)
    shutil.rmtree(cache / "staging")
    return sdist


def _needs_build_tools() -> None:
    if shutil.which("cmake") is None or shutil.which("c++") is None or shutil.which("make") is None:
        pytest.skip("cmake, make or a C++ compiler is not installed here")


def test_build_pipeline_builds_checks_and_installs(cache: Path) -> None:
    _needs_build_tools()
    _fake_sdist(cache)
    events: list[BuildProgress] = []
    result = build_server(version=FAKE_VERSION, jobs=1, progress=events.append)
    key = cache_key(FAKE_COMMIT)
    assert not result.cached and result.commit == FAKE_COMMIT and result.key == key
    assert result.binary == cache / "llama-server" / key / "llama-server"
    ran = subprocess.run([str(result.binary)], capture_output=True, text=True, check=True)
    assert ran.stdout.startswith("version: 9.9.9")
    about = json.loads((result.binary.parent / "build.json").read_text())
    assert about == {"llama_cpp_python": FAKE_VERSION, "commit": FAKE_COMMIT, "cmake_args": []}
    stages = [e.stage for e in events]
    assert stages[0] == "extract" and stages[-1] == "install"  # the sdist was there: no download
    assert {"configure", "build"} <= set(stages)
    percents = [e.percent for e in events if e.percent is not None]
    assert percents and percents == sorted(percents) and percents[-1] == 100
    assert all(e.stage == "build" for e in events if e.percent is not None)
    log = result.log
    assert log == cache / "llama-server" / "logs" / f"{key}.log"
    text = log.read_text()
    assert "-DLLAMA_BUILD_SERVER=ON" in text and "--target llama-server" in text
    assert "Built target llama-server" in text and "Built target other" not in text  # only the target
    assert not list((cache / "llama-server").glob("build-*"))  # the temp folder is gone

    again: list[BuildProgress] = []  # an unknown version's cache is found after reading its commit
    hit = build_server(version=FAKE_VERSION, progress=again.append)
    assert hit.cached and hit.binary == result.binary and [e.stage for e in again] == ["extract"]

    custom = build_server(version=FAKE_VERSION, cmake_args=["-DEDGEJUDGE_TEST=1"], jobs=1)
    assert not custom.cached and custom.key == cache_key(FAKE_COMMIT, ["-DEDGEJUDGE_TEST=1"]) != key
    assert custom.log is not None and "-DEDGEJUDGE_TEST=1" in custom.log.read_text()
    assert result.binary.is_file() and custom.binary.is_file()  # side by side


def test_build_failure_keeps_the_log(cache: Path) -> None:
    _needs_build_tools()
    _fake_sdist(cache, 'cmake_minimum_required(VERSION 3.14)\nmessage(FATAL_ERROR "stand-in failure")\n')
    with pytest.raises(EngineError, match="configure step failed") as err:
        build_server(version=FAKE_VERSION)
    log = cache / "llama-server" / "logs" / f"{cache_key(FAKE_COMMIT)}.log"
    assert str(log) in str(err.value)
    assert "stand-in failure" in log.read_text()
    assert not list((cache / "llama-server").glob("build-*"))
    assert not (cache / "llama-server" / cache_key(FAKE_COMMIT)).exists()  # nothing installed


def test_build_refuses_an_archive_escaping_its_folder(cache: Path) -> None:
    _needs_build_tools()
    src = cache / "llama-server" / "src"
    src.mkdir(parents=True)
    payload = cache / "payload.txt"
    payload.write_text("outside")
    with tarfile.open(src / f"llama_cpp_python-{FAKE_VERSION}.tar.gz", "w:gz") as archive:
        archive.add(payload, arcname="../../escaped.txt")
    with pytest.raises(EngineError, match="cannot be extracted") as err:
        build_server(version=FAKE_VERSION)
    assert err.value.hint is not None and "downloaded again" in err.value.hint
    assert not list(cache.rglob("escaped.txt"))


# -- a real server ----------------------------------------------------------------------------------


def test_running_server_serves_the_pair_with_edgejudge_flags(tiny_gguf: tuple[Path, Path]) -> None:
    text, mmproj = tiny_gguf
    with running_server(text, mmproj, slots=2, ctx_per_seq=256) as server:
        assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
        props = httpx.get(f"{server.url}/props").json()
        assert props["media_marker"] == MEDIA_MARKER
        assert props["total_slots"] == 2
        assert props["default_generation_settings"]["n_ctx"] == 256
        assert Path(props["model_path"]) == text
        assert props["modalities"]["vision"] is True
        slots = httpx.get(f"{server.url}/slots").json()
        assert [s["n_ctx"] for s in slots] == [256, 256]
        process = server.process
    assert process.poll() is not None  # stopped on leaving the block
    assert server.stop() == process.returncode  # idempotent


def test_start_server_refuses_a_port_in_use(tiny_gguf: tuple[Path, Path]) -> None:
    server_binary()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EngineError, match=f"port {port} on 127.0.0.1 is already in use"):
            start_server(tiny_gguf[0], port=port, threads=1)


def test_start_server_quotes_the_server_when_it_exits_early(
    tiny_gguf: tuple[Path, Path], tmp_path: Path
) -> None:
    """A .gguf that is not a model: llama-server exits while starting; its last lines are in the message."""
    server_binary()
    broken = tmp_path / "broken-Q4_K_M.gguf"
    broken.write_bytes(b"GGUF but not really" * 10)
    shutil.copy(tiny_gguf[1], tmp_path / "mmproj-broken-F16.gguf")
    log = tmp_path / "server.log"
    with pytest.raises(EngineError, match="llama-server exited while starting") as err:
        start_server(broken, port=free_port(), threads=1, log=log)
    assert str(err.value).count("\n") == 0
    assert "broken-Q4_K_M.gguf" in str(err.value)  # its own words, quoted
    assert "broken-Q4_K_M.gguf" in log.read_text(errors="replace")  # the log file kept its whole output


def test_start_server_resolves_the_model_like_the_judge(tiny_gguf: tuple[Path, Path]) -> None:
    with pytest.raises(ModelNotFoundError, match="no-such-judge"):
        start_server("no-such-judge", port=free_port())


def test_start_server_names_a_log_file_it_cannot_open(tiny_gguf: tuple[Path, Path], tmp_path: Path) -> None:
    server_binary()
    with pytest.raises(InputError, match="cannot open the log file"):
        start_server(tiny_gguf[0], port=free_port(), log=tmp_path / "missing-folder" / "server.log")
