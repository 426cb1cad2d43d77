"""Test-only writers that must never ship in the wheel: checkpoints with code-execution payloads.

``write_malicious_shard`` writes a torch zip-pickle whose ``data.pkl`` would create a marker file if a plain
unpickler (``torch.load``) read it; the tests prove edgejudge's restricted unpickler refuses it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgejudge.convert.torchzip import StoredTensor, torch_pickle, write_torch_zip

__all__ = ["write_malicious_shard"]


class _Payload:
    """Pickles as a call of ``func(*args)``: what an attacker plants in a state dict."""

    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (self.func, self.args)


def write_malicious_shard(path: str | Path, marker: str | Path, *, kind: str = "system") -> Path:
    """Write a torch zip-pickle whose ``data.pkl`` would create ``marker`` if unpickled by ``torch.load``.

    It holds one real BF16 tensor first, then a REDUCE of a disallowed callable: kind "system"
    (``os.system("touch marker")``, pickled as ``posix.system``), "eval" (``builtins.eval``) or "exec"
    (``builtins.exec``). Nothing runs while writing: pickling only records the callable's name.
    """
    import builtins

    marker = Path(marker).absolute()
    code = f"open({str(marker)!r}, 'w').close()"
    payloads = {
        "system": _Payload(os.system, (f"touch '{marker}'",)),
        "eval": _Payload(builtins.eval, (code,)),
        "exec": _Payload(builtins.exec, (code,)),
    }
    if kind not in payloads:
        raise ValueError(f"unknown payload kind {kind!r}: system, eval or exec")
    path = Path(path)
    tensor = StoredTensor("model.norm.weight", "0", (4,))
    storages = {"0": ("BF16", 4)}
    pkl = torch_pickle([tensor], storages, extra={"payload": payloads[kind]})
    write_torch_zip(path, [tensor], storages, lambda key: b"\x80\x3f" * 4, pickle_bytes=pkl)
    return path
