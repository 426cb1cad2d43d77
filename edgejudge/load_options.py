"""``LoadOptions``: what to load and how (``load.load_judge`` takes it, ``Judge.from_files`` builds it).

One field per load setting of ``edgejudge.settings`` (defaults and bounds are written there). ``engine``
picks where the judge runs: ``llama.cpp`` in this process (``engine_options`` are ``LlamaCppEngine``'s
keyword arguments), or ``llama-server``/``vllm`` on the ``servers`` given (``remote_options``: the remote
engines' keyword arguments). ``ENGINE_FIELDS`` are the fields that only the in-process engine takes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import InputError
from .settings import check, default

__all__ = ["LoadOptions", "ENGINE_FIELDS", "REMOTE_ENGINES"]

#: The ``LoadOptions`` fields that are ``LlamaCppEngine`` keyword arguments (and ``parallel``, its
#: ``max_parallel``).
ENGINE_FIELDS = (
    "n_ctx",
    "n_threads",
    "n_gpu_layers",
    "verbose",
    "mmproj_offload",
    "image_cache_size",
    "n_batch",
    "seed",
    "mmap",
    "kv_size",
    "kv_cache_type",
)

#: The in-process engine's runtime fields a remote engine refuses (its servers have their own).
_LOCAL_ONLY = (
    "n_ctx",
    "n_threads",
    "n_gpu_layers",
    "n_batch",
    "image_cache_size",
    "mmap",
    "kv_size",
    "kv_cache_type",
)

#: The engines that run on servers (``servers`` required).
REMOTE_ENGINES = ("llama-server", "vllm")
_ENGINES = ("llama.cpp", *REMOTE_ENGINES)


@dataclass(frozen=True)
class LoadOptions:
    """What to load and how (``load.load_judge`` takes it): the model (a registered ``name``/``name:QUANT``,
    a text ``.gguf`` path, or None for the default model; for ``vllm`` the served model's name or a local
    llava-hf folder), the projector (None: found beside the text model or in the registry) and the runtime
    settings. Checked on creation (``image_fit`` only as text: its modes are checked by
    ``images.check_fit`` before anything is loaded): ``engine`` is one of llama.cpp, llama-server, vllm;
    a remote engine needs ``servers`` and refuses the in-process runtime fields set to anything but their
    defaults (n_ctx, n_threads, n_gpu_layers, n_batch, image_cache_size and the memory settings mmap,
    kv_size, kv_cache_type: the servers' own), and the
    in-process one takes no ``servers``. ``seed`` is the engine's default
    seed, for generations that do not set one (the ``seed`` setting's default and bounds).
    """

    model: str | Path | None = default("model")
    mmproj: str | Path | None = default("mmproj")
    n_ctx: int = default("n_ctx")
    n_threads: int | None = default("n_threads")
    n_gpu_layers: int = default("n_gpu_layers")
    parallel: int = default("parallel")
    image_fit: str = default("image_fit")
    verbose: bool = default("verbose")
    mmproj_offload: bool = default("mmproj_offload")
    image_cache_size: int = default("image_cache_size")
    n_batch: int = default("n_batch")
    seed: int | None = default("seed")
    engine: str = default("engine")
    servers: tuple[str, ...] = default("servers")
    concurrency: int | None = default("concurrency")
    request_timeout: float = default("request_timeout")
    mmap: str = default("mmap")
    kv_size: str = default("kv_size")
    kv_cache_type: str = default("kv_cache_type")

    def __post_init__(self) -> None:
        if isinstance(self.model, os.PathLike):  # a path to the text model: kept as text, like a name
            object.__setattr__(self, "model", os.fspath(self.model))
        if isinstance(self.servers, list):
            object.__setattr__(self, "servers", tuple(self.servers))
        for f in fields(self):
            check(f.name, getattr(self, f.name))
        if self.engine not in _ENGINES:
            raise InputError(
                f"unknown engine {self.engine!r}", hint="use engine llama.cpp, llama-server or vllm"
            )
        if self.engine in REMOTE_ENGINES and not self.servers:
            raise InputError(
                f"the {self.engine} engine needs the URL of at least one server",
                hint="give servers (e.g. http://127.0.0.1:8080)",
                about=("servers",),
            )
        if self.remote:
            local = [name for name in _LOCAL_ONLY if getattr(self, name) != default(name)]
            if local:
                raise InputError(
                    f"{', '.join(local)} set for the {self.engine} engine: the servers have their own "
                    "(context per slot, threads, GPU layers)",
                    hint="set them when starting the servers, and leave them unset here",
                    about=tuple(local),
                )
        if self.engine == "llama.cpp" and self.servers:
            raise InputError(
                "servers were given but the engine is llama.cpp (in this process)",
                hint="choose engine llama-server or vllm to judge on servers",
                about=("engine",),
            )

    @property
    def remote(self) -> bool:
        """True when the judge runs on servers."""
        return self.engine in REMOTE_ENGINES

    @classmethod
    def from_engine_options(
        cls, model: str | Path | None, mmproj: str | Path | None, image_fit: str, options: Mapping[str, Any]
    ) -> LoadOptions:
        """From ``LlamaCppEngine``'s keyword arguments (``max_parallel`` is ``parallel``), as
        ``Judge.from_files`` takes them; an unknown keyword is a TypeError, as it is for the engine."""
        values = dict(options)
        if "max_parallel" in values:
            if "parallel" in values:
                raise TypeError("give parallel or max_parallel, not both")
            values["parallel"] = values.pop("max_parallel")
        unknown = sorted(set(values) - {*ENGINE_FIELDS, "parallel"})
        if unknown:
            raise TypeError(f"unexpected engine option(s): {', '.join(unknown)}")
        return cls(model=model, mmproj=mmproj, image_fit=image_fit, **values)

    def engine_options(self) -> dict[str, Any]:
        """The ``LlamaCppEngine`` keyword arguments these options set."""
        return {name: getattr(self, name) for name in ENGINE_FIELDS} | {"max_parallel": self.parallel}

    def remote_options(self) -> dict[str, Any]:
        """The remote engines' keyword arguments these options set (``LlamaServerEngine``, ``VllmEngine``)."""
        return {
            "servers": list(self.servers),
            "concurrency": self.concurrency,
            "max_parallel": self.parallel,
            "timeout_s": self.request_timeout,
        }
