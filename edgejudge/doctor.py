"""``edgejudge doctor`` facts: versions, CPU features, GPU offload, models, the CLS self-test, memory.

``collect(selftest=True)`` gathers everything into a ``DoctorReport`` (frozen, ``to_dict()`` for JSON).
Nothing here prints and nothing raises for a missing piece: a failing check becomes a ``problem`` line.
What the llama.cpp build says about itself comes from :mod:`edgejudge.native.system`; what a model needs
in memory from :func:`edgejudge.memory.estimate` (the engine's own sizes, at the load settings' defaults).
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from . import __version__, config

__all__ = ["DoctorReport", "collect", "versions", "cpu_info", "gpu_info", "memory_info", "model_needs"]

_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
)
_ARM_FLAGS = ("neon", "asimd", "asimdhp", "asimddp", "sve", "sve2", "i8mm", "bf16")


@dataclass(frozen=True)
class DoctorReport:
    """Everything ``edgejudge doctor`` shows. ``problems`` are things to fix; ``notes`` are worth knowing."""

    versions: dict[str, str | None]
    cpu: dict[str, Any]
    gpu: dict[str, Any]
    memory: dict[str, int | None]
    models_dir: str
    models: tuple[dict[str, Any], ...]
    selftest: dict[str, Any] | None
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "versions": self.versions,
            "cpu": self.cpu,
            "gpu": self.gpu,
            "memory": self.memory,
            "models_dir": self.models_dir,
            "models": list(self.models),
            "selftest": self.selftest,
            "problems": list(self.problems),
            "notes": list(self.notes),
            "ok": not self.problems,
        }


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "edgejudge": __version__,
        "llama-cpp-python": _dist_version("llama-cpp-python") or _dist_version("llama_cpp_python"),
        "gguf": _dist_version("gguf"),
        "numpy": _dist_version("numpy"),
        "pillow": _dist_version("pillow"),
        "huggingface-hub": _dist_version("huggingface-hub") or _dist_version("huggingface_hub"),
    }


def _system_info() -> str | None:
    from .native.system import system_info

    return system_info()


def _has_amx() -> bool:
    from .native.system import has_amx

    return has_amx()


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """Model, cores and the SIMD features that matter to llama.cpp (from /proc/cpuinfo and llama.cpp)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("model name", "hardware", "cpu model") and value.strip():
            model = value.strip()
    wanted = _ARM_FLAGS if platform.machine().lower() in ("aarch64", "arm64") else _FLAGS
    return {
        "model": model,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "features": [f for f in wanted if f in flags],
        "llama_system_info": _system_info(),
    }


def gpu_info(system_info: str | None = None) -> dict[str, Any]:
    """Whether this llama.cpp build can offload to a GPU, and its backends (parsed from the system info)."""
    from .native.system import supports_gpu_offload

    info = system_info if system_info is not None else _system_info()
    offload = supports_gpu_offload()
    backends = re.findall(r"(?:^|\|\s*)([A-Za-z][A-Za-z0-9_]*) : ", info or "")
    gpu_backends = [b for b in backends if b.upper() not in ("CPU", "BLAS", "LLAMAFILE")]
    return {
        "offload_supported": offload,
        "backends": backends,
        "gpu_backend": gpu_backends[0] if gpu_backends else None,
    }


def memory_info(meminfo: str | None = None) -> dict[str, int | None]:
    """Total and available memory in bytes (/proc/meminfo, else sysconf)."""
    total = available = None
    if meminfo is None:
        try:
            meminfo = Path("/proc/meminfo").read_text(encoding="utf-8")
        except OSError:
            meminfo = ""
    for line in meminfo.splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if not parts or not parts[0].isdigit():
            continue
        scale = 1024 if len(parts) > 1 and parts[1].lower() == "kb" else 1
        if key == "MemTotal":
            total = int(parts[0]) * scale
        elif key == "MemAvailable":
            available = int(parts[0]) * scale
    if total is None and hasattr(os, "sysconf"):
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            total = os.sysconf("SC_PHYS_PAGES") * page
            available = os.sysconf("SC_AVPHYS_PAGES") * page
        except (ValueError, OSError):
            pass
    return {"total_bytes": total, "available_bytes": available}


def model_needs(text_model: str | Path, mmproj: str | Path) -> dict[str, Any]:
    """What the pair needs in memory at the default load settings (``memory.estimate``): ``total_bytes``
    for one verdict (``edgejudge judge``), ``batch_bytes`` with the context full (``batch``, ``serve``),
    ``files_bytes`` and the parts of the first (``parts``: weights, repack copy, projector, KV cells...)."""
    from .load_options import LoadOptions
    from .memory import estimate

    options = LoadOptions()
    judge = estimate(text_model, mmproj, options)
    batch = estimate(text_model, mmproj, options, case="batch")
    return {
        "files_bytes": Path(text_model).stat().st_size + Path(mmproj).stat().st_size,
        "total_bytes": judge.total,
        "batch_bytes": batch.total,
        "parts": judge.to_dict(),
    }


def _models(available: int | None, problems: list[str], notes: list[str]) -> tuple[dict[str, Any], ...]:
    from .errors import EdgeJudgeError
    from .registry import load_registry

    try:
        reg = load_registry()
    except EdgeJudgeError as err:
        problems.append(str(err))
        return ()
    out = []
    for m in reg.models:
        row: dict[str, Any] = {
            "model": m.key,
            "present": m.present,
            "default": reg.default in (m.name, m.key),
        }
        if not m.present:
            problems.append(f"files of {m.key} are missing (edgejudge models verify {m.key})")
        else:
            try:
                need = model_needs(m.text_model, m.mmproj)
            except EdgeJudgeError as err:
                problems.append(f"{m.key}: {err}")
                need = None
            if need is not None:
                row.update(need)
                row["fits_in_memory"] = None if available is None else need["total_bytes"] <= available
                if row["fits_in_memory"] is False:
                    notes.append(
                        f"{m.key} needs about {need['total_bytes'] / 2**30:.1f} GiB, more than is free now"
                    )
                elif available is not None and need["batch_bytes"] > available:
                    notes.append(
                        f"{m.key} needs about {need['batch_bytes'] / 2**30:.1f} GiB with the context full "
                        "(batch, serve), more than is free now: lower n_ctx or use kv_cache_type q8_0"
                    )
        out.append(row)
    if not out:
        notes.append(
            "no models installed: run `edgejudge demo`, then `edgejudge models pull prometheus-vision-7b`"
        )
    return tuple(out)


def _selftest(problems: list[str]) -> dict[str, Any] | None:
    try:
        from .probe import run_selftest

        report = run_selftest()
    except Exception as err:  # noqa: BLE001 - a failing self-test is a finding, not a crash
        problems.append(f"CLS self-test failed: {err}")
        return {"error": str(err)}
    return {
        "cls_position": report.cls_position,
        "text_max_abs_err": report.text_max_abs_err,
        "vision_rel_err": report.vision_rel_err,
        "seconds": report.seconds,
    }


def collect(*, selftest: bool = True) -> DoctorReport:
    """Gather the doctor report (``selftest=False`` skips the CLS-order self-test, a second or two)."""
    problems: list[str] = []
    notes: list[str] = []
    vers = versions()
    if vers["llama-cpp-python"] is None or _system_info() is None:
        problems.append(
            "llama-cpp-python is not importable: reinstall it (pip install llama-cpp-python==0.3.36)"
        )
    elif vers["llama-cpp-python"] != "0.3.36":
        problems.append(
            f"llama-cpp-python {vers['llama-cpp-python']} is installed; edgejudge is tested with 0.3.36"
        )
    cpu = cpu_info()
    gpu = gpu_info(cpu["llama_system_info"])
    if gpu["offload_supported"] is False:
        notes.append('this llama.cpp build is CPU-only; for a GPU reinstall with CMAKE_ARGS="-DGGML_CUDA=on"')
    if _has_amx():
        notes.append(
            "this llama.cpp build has AMX kernels: edgejudge loads models without them (and without the "
            "CPU weight repacking): its AMX matrix multiply crashes on Q4_K weights (llama.cpp issue 20824)"
        )
    memory = memory_info()
    models = _models(memory["available_bytes"], problems, notes)
    test = _selftest(problems) if selftest else None
    return DoctorReport(
        versions=vers,
        cpu=cpu,
        gpu=gpu,
        memory=memory,
        models_dir=str(config.models_dir()),
        models=models,
        selftest=test,
        problems=tuple(problems),
        notes=tuple(notes),
    )
