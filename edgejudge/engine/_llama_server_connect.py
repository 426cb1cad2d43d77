"""Connecting the llama-server engine to one server: what it serves, checked against the judge pair named.

``connect(client, facts, mmproj, runtime_cls)`` reads ``GET /health``, ``GET /props`` (media marker,
slot count, vision modality, ``build_info``, ``model_path``), ``GET /v1/models`` (the model's ``meta``:
tensor bytes ``size``, ``n_params``, ``n_vocab``) and ``GET /slots`` (each slot's ``n_ctx``; without that
endpoint the default slot's ``n_ctx`` from ``/props``), and refuses, one line naming both sides:

- another **text model**: the served file's name, its tensor bytes (llama.cpp's model size: the same file
  gives the same count wherever it lives), parameter and vocabulary counts must be the local GGUF's;
- a server **without a projector** (no vision modality). This llama-server version reports nothing else
  about its projector (no file name, no size), so the projector is checked on every request instead: the
  prompt positions the server counts must be the ones the local projector implies (one image = its
  ``image_tokens``), else the request fails naming both counts;
- a **build** whose CLS order is unknown or contradicts the projector's stamp: the build is the commit in
  ``build_info`` (``b<n>-<commit>``). A known build is the llama.cpp commit vendored in the installed
  llama-cpp-python (``_serverctl_build.KNOWN_COMMITS``), which is the code the local engine runs, so its
  CLS order is the local runtime's (``runtime_cls``, by default the cached probe). The projector's stamp
  must match it (``judgefile.check_cls``); an unstamped projector runs with the rule's warning.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._serverctl_build import KNOWN_COMMITS, pinned_version
from ..errors import CLSOrderMismatchError, EngineError
from ..judgefile import check_cls
from ._http import HttpClient
from ._llama_server_vocab import TextModelFacts
from ._mmproj import MmprojInfo

__all__ = ["ServerInfo", "connect", "build_commit", "known_build"]

_BUILD = re.compile(r"(?:^|-)([0-9a-f]{7,40})$")
_BUILD_HINT = (
    "run a llama-server built from the llama.cpp commit the installed llama-cpp-python vendors "
    "(serverctl.build_server builds it), or judge with the local engine"
)


@dataclass(frozen=True)
class ServerInfo:
    """One checked server: its media ``marker``, ``slots``, the smallest slot context ``n_ctx``, its
    ``build`` (as reported) and the load ``warnings`` of the pair on it."""

    url: str
    marker: str
    slots: int
    n_ctx: int
    build: str
    warnings: tuple[str, ...] = ()


def build_commit(build_info: str) -> str | None:
    """The llama.cpp commit (7–40 hex digits) at the end of ``build_info`` (``b1-0c1e570``), or None."""
    match = _BUILD.search(build_info.strip().lower())
    return match.group(1) if match else None


def known_build(build_info: str) -> bool:
    """Whether ``build_info`` names the llama.cpp commit of the installed llama-cpp-python."""
    commit = build_commit(build_info)
    full = KNOWN_COMMITS.get(pinned_version())
    return commit is not None and full is not None and full.startswith(commit)


def _served_name(path: str) -> str:
    return re.split(r"[\\/]", path.rstrip("/\\"))[-1]


def _model_meta(models: Any, served: str) -> dict[str, Any]:
    data = models.get("data") if isinstance(models, dict) else None
    entries = [m for m in data or [] if isinstance(m, dict)]
    for entry in entries:
        if _served_name(str(entry.get("id", ""))) == served or len(entries) == 1:
            meta = entry.get("meta")
            return meta if isinstance(meta, dict) else {}
    return {}


def connect(
    client: HttpClient, facts: TextModelFacts, mmproj: MmprojInfo, runtime_cls: str | Callable[[], str]
) -> ServerInfo:
    """Check the server behind ``client`` (module docstring); its ``ServerInfo`` or one EngineError."""
    url = client.url
    client.get_json("/health")
    props = client.get_json("/props")
    if not isinstance(props, dict) or "total_slots" not in props:
        raise EngineError(f"{url} does not answer /props like llama-server", hint="give a llama-server URL")
    marker = props.get("media_marker")
    vision = (props.get("modalities") or {}).get("vision")
    if not isinstance(marker, str) or not marker or vision is not True:
        raise EngineError(
            f"{url} serves no vision projector (it takes no images)",
            hint="start the server with the judge's projector (--mmproj)",
        )
    served = _served_name(str(props.get("model_path", "")))
    meta = _model_meta(client.get_json("/v1/models"), served)
    theirs = (served, meta.get("size"), meta.get("n_params"), meta.get("n_vocab"))
    ours = (facts.name, facts.tensor_bytes, facts.n_params, facts.n_vocab)
    if theirs != ours:
        raise EngineError(
            f"{url} serves {served or 'an unnamed model'} ({meta.get('size')} bytes of weights, "
            f"{meta.get('n_params')} parameters), not {facts.name} ({facts.tensor_bytes} bytes, "
            f"{facts.n_params} parameters)",
            hint="start the server on the judge pair named here, or name the pair it serves",
        )
    build = str(props.get("build_info", ""))
    if not known_build(build):
        raise EngineError(
            f"{url} runs llama.cpp build {build or '(unreported)'}, whose CLS order edgejudge does not know "
            f"(known: the commit of llama-cpp-python {pinned_version()})",
            hint=_BUILD_HINT,
        )
    try:
        warnings = check_cls(mmproj.cls_position, runtime_cls)
    except CLSOrderMismatchError:
        actual = runtime_cls() if callable(runtime_cls) else runtime_cls
        raise CLSOrderMismatchError(
            f"the projector was converted for a llama.cpp that puts CLIP's class token "
            f"{mmproj.cls_position}, but the build of {url} ({build}) puts it {actual}",
            hint="re-convert the checkpoint with this edgejudge for that build",
        ) from None
    slots = int(props.get("total_slots") or 0)
    n_ctx = _slot_context(client, props)
    if slots < 1 or n_ctx < 1:
        raise EngineError(f"{url} reports {slots} slots of {n_ctx} tokens", hint="restart the server")
    return ServerInfo(url, marker, slots, n_ctx, build, tuple(warnings))


def _slot_context(client: HttpClient, props: dict[str, Any]) -> int:
    """The smallest slot context (``GET /slots``), or the default slot's when that endpoint is off."""
    if props.get("endpoint_slots"):
        slots = client.get_json("/slots")
        sizes = (
            [int(s["n_ctx"]) for s in slots if isinstance(s, dict) and "n_ctx" in s]
            if isinstance(slots, list)
            else []
        )
        if sizes:
            return min(sizes)
    settings = props.get("default_generation_settings") or {}
    return int(settings.get("n_ctx") or 0)
