"""The on-disk pair contract (edgejudge.judgefile): quant vocabulary, names, CLS rule, the metadata reader;
and that every package reads it from there (no copy of a rule elsewhere)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from edgejudge import judgefile
from edgejudge.engine._mmproj import MmprojInfo, check_cls_position, read_mmproj_info
from edgejudge.errors import CLSOrderMismatchError, EngineError, InputError, ModelNotFoundError
from edgejudge.judgefile import (
    CLS_KEY,
    MMPROJ_QUANTS,
    NO_CLS_KEY_WARNING,
    QUANTS,
    TEXT_QUANTS,
    check_cls,
    check_cls_value,
    check_name,
    default_name,
    find_mmproj,
    normalize_quant,
    pair_names,
    quant_of_file_type,
    read_metadata,
    size_ratio,
)


def _gguf(path: Path, fields: dict[str, object], *, arch: str = "clip") -> Path:
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in fields.items():
        if isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_uint32(key, int(value))  # type: ignore[call-overload]
    writer.add_tensor("mm.2.weight", np.zeros((3, 5), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_vocabulary_is_one_table() -> None:
    assert TEXT_QUANTS == ("F16", "Q8_0", "Q5_K_M", "Q4_K_M")
    assert MMPROJ_QUANTS == ("F16", "Q8_0")
    for quant in QUANTS:  # a quant's llama_ftype is also the general.file_type a GGUF records
        assert quant_of_file_type(quant.ftype) == quant.name
    assert quant_of_file_type(32) == "BF16" and quant_of_file_type(999) is None
    assert size_ratio("F16") == 1.0 and 0 < size_ratio("Q4_K_M") < size_ratio("Q8_0") < 1
    assert normalize_quant(" q5_k_m ", TEXT_QUANTS) == "Q5_K_M"
    with pytest.raises(InputError, match="unknown quantization 'Q5_K_M'"):
        normalize_quant("Q5_K_M", MMPROJ_QUANTS)


def test_names_and_files(tmp_path: Path) -> None:
    assert pair_names("judge", "Q4_K_M", "F16") == ("judge-Q4_K_M.gguf", "mmproj-judge-F16.gguf")
    assert check_name("my-judge.v2_1") == "my-judge.v2_1"
    for bad in ("", "../evil", "a b", ".hidden", "x/y"):
        with pytest.raises(InputError, match="invalid model name"):
            check_name(bad)
    assert default_name("owner/Prometheus Vision 7B/") == "Prometheus-Vision-7B"
    assert default_name("///") == "model"
    text = tmp_path / "judge-Q4_K_M.gguf"
    text.write_bytes(b"")
    (tmp_path / "mmproj-judge-Q8_0.gguf").write_bytes(b"")
    assert find_mmproj(text).name == "mmproj-judge-Q8_0.gguf"
    with pytest.raises(ModelNotFoundError, match="is a vision projector") as info:
        find_mmproj(tmp_path / "mmproj-judge-Q8_0.gguf")
    assert "--" not in (info.value.hint or "")
    with pytest.raises(ModelNotFoundError) as missing:
        find_mmproj(tmp_path / "other-F16.gguf")
    assert "--" not in (missing.value.hint or "") and "=" not in (missing.value.hint or "")


def test_the_cls_rule() -> None:
    asked: list[int] = []

    def runtime() -> str:
        asked.append(1)
        return "last"

    assert check_cls(None, runtime) == [NO_CLS_KEY_WARNING] and asked == []  # unstamped: runtime not asked
    assert "converted elsewhere" in NO_CLS_KEY_WARNING and "not converted by edgejudge" in NO_CLS_KEY_WARNING
    assert check_cls("last", runtime) == [] and asked == [1]
    assert check_cls("first", "first") == []
    with pytest.raises(CLSOrderMismatchError, match="puts CLIP's class token first") as info:
        check_cls("first", runtime)
    assert info.value.hint and "convert" in info.value.hint
    assert check_cls_value("last") == "last"
    with pytest.raises(InputError, match="cls_position"):
        check_cls_value("middle")


def test_the_cls_value_hint_fits_every_caller() -> None:
    """A bad value from a caller of the converter (where leaving it unset is itself refused), of
    ``edgejudge.convert_checkpoint`` or from a runtime function: the hint says what the value is, and
    never "leave it unset" (review A8)."""
    with pytest.raises(InputError, match="cls_position must be 'first' or 'last', not 'middle'") as info:
        check_cls_value("middle")
    hint = info.value.hint or ""
    assert "'first'" in hint and "'last'" in hint and "class token" in hint
    assert "unset" not in hint and "--" not in hint


def test_one_metadata_reader(tmp_path: Path) -> None:
    path = _gguf(
        tmp_path / "mmproj-x-F16.gguf",
        {
            "general.file_type": 1,
            "clip.vision.image_size": 336,
            "clip.vision.patch_size": 14,
            CLS_KEY: "last",
        },
    )
    meta = read_metadata(path)
    assert meta.architecture == "clip" and meta.quant == "F16" and meta.cls_position == "last"
    assert meta.get("clip.vision.image_size") == 336 and meta.tensors["mm.2.weight"] == (5, 3)
    info = read_mmproj_info(path)
    assert info == MmprojInfo(336, 14, "last") and info.image_tokens == 576
    junk = tmp_path / "junk-Q4_K_M.gguf"
    junk.write_bytes(b"not a gguf" * 10)
    with pytest.raises(InputError, match="is not a GGUF file"):
        read_metadata(junk)
    with pytest.raises(EngineError, match="is not a GGUF file"):
        read_mmproj_info(junk)
    unnamed = _gguf(tmp_path / "foreign-IQ2_XS.gguf", {"general.file_type": 12345}, arch="llama")
    assert read_metadata(unnamed).quant is None and read_metadata(unnamed).quant_or_name() == "IQ2_XS"


def test_the_engine_always_checks_a_stamp_against_the_runtime() -> None:
    """No way to skip the check (review A2): the runtime's order is a required argument, asked only for a
    stamped projector; ``LlamaCppEngine`` passes the cached probe unless given a value."""
    import inspect

    stamped = MmprojInfo(336, 14, "first")
    assert check_cls_position(stamped, "first") == []
    assert check_cls_position(stamped, lambda: "first") == []
    with pytest.raises(CLSOrderMismatchError):
        check_cls_position(stamped, lambda: "last")
    with pytest.raises(TypeError):
        check_cls_position(stamped)  # type: ignore[call-arg]

    def never() -> str:
        raise AssertionError("the runtime is asked only for a stamped projector")

    assert check_cls_position(MmprojInfo(336, 14, None), never) == [NO_CLS_KEY_WARNING]
    assert inspect.signature(check_cls_position).parameters["runtime_cls"].default is inspect.Parameter.empty


def test_nobody_keeps_a_copy_of_the_contract() -> None:
    package = Path(judgefile.__file__).parent
    for path in package.rglob("*.py"):
        if path.name == "judgefile.py":
            continue
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(package)
        assert '"edgejudge.clip.cls_position"' not in text, rel
        assert '("F16", "Q8_0", "Q5_K_M", "Q4_K_M")' not in text, rel
        assert "GGUFReader(" not in text, rel
