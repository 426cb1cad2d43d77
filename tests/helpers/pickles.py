"""Test-only writers that must never ship in the wheel: checkpoints with code-execution payloads and
torch zips around hand-made pickles.

``write_malicious_shard`` writes a torch zip-pickle whose ``data.pkl`` would create a marker file if a plain
unpickler (``torch.load``) read it; the tests prove edgejudge's restricted unpickler refuses it.
``with_entries`` adds arbitrary objects to a state-dict pickle (``edgejudge.convert.torchzip.torch_pickle``
writes only tensors); ``write_shard`` writes a torch.save-style zip around any ``data.pkl`` bytes (the
package's ``write_torch_zip`` always pickles its own tensors).
"""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgejudge.convert.torchzip import StoredTensor, torch_pickle

__all__ = ["write_malicious_shard", "with_entries", "write_shard"]

_LOCAL_HEADER_SIZE = 30


class _Payload:
    """Pickles as a call of ``func(*args)``: what an attacker plants in a state dict."""

    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (self.func, self.args)


def with_entries(state_pickle: bytes, entries: Mapping[str, Any]) -> bytes:
    """``state_pickle`` (a protocol-2 pickle of a dict, as ``torch_pickle`` writes) with ``entries`` set on
    that dict after its own items, pickled as-is (``__reduce__`` payloads included).

    The dict is on top of the unpickler's stack just before the final STOP, so one more MARK ... SETITEMS
    there adds the entries. Each key and value is pickled on its own, without its PROTO header and STOP;
    their memo indices restart at 0, which only overwrites memo slots the original part no longer reads.
    """
    if not state_pickle.endswith(pickle.STOP):
        raise ValueError("not a complete pickle")
    body = b"".join(pickle.dumps(obj, protocol=2)[2:-1] for item in entries.items() for obj in item)
    return state_pickle[:-1] + pickle.MARK + body + pickle.SETITEMS + pickle.STOP


def _member(zf: zipfile.ZipFile, name: str, data: bytes, align: int = 64) -> None:
    """A ZIP_STORED member whose data starts on an ``align`` boundary (padding extra field, like torch)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    pad = (-(zf.start_dir + _LOCAL_HEADER_SIZE + len(name.encode()) + 4)) % align
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad
    zf.writestr(info, data)


def write_shard(path: str | Path, pickle_bytes: bytes, storages: Mapping[str, bytes]) -> Path:
    """A torch.save-style zip at ``path``: ``<stem>/data.pkl`` = ``pickle_bytes`` as given, then
    ``byteorder``, one ``data/<key>`` member per storage (raw bytes) and ``version``."""
    path = Path(path)
    root = path.stem
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        _member(zf, f"{root}/data.pkl", pickle_bytes)
        _member(zf, f"{root}/byteorder", b"little")
        for key, raw in storages.items():
            _member(zf, f"{root}/data/{key}", raw)
        _member(zf, f"{root}/version", b"3\n")
    return path


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
    tensor = StoredTensor("model.norm.weight", "0", (4,))
    pkl = with_entries(torch_pickle([tensor], {"0": ("BF16", 4)}), {"payload": payloads[kind]})
    return write_shard(path, pkl, {"0": b"\x80\x3f" * 4})
