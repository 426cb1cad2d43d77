"""The model registry and ``edgejudge models``: manifest, resolve_model, add/path/default/verify/remove, and
``models pull`` from a LOCAL checkpoint directory (the tiny fixture, real converter; no network)."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from typer.testing import CliRunner

from edgejudge import config
from edgejudge.cli import app
from edgejudge.errors import InputError, ModelNotFoundError
from edgejudge.registry import (
    find_installed,
    known_models,
    load_registry,
    make_entry,
    register,
    registry_path,
    resolve_model,
    sha256_file,
)

runner = CliRunner()


def _write_gguf(
    path: Path, arch: str, file_type: int, fields: dict[str, object], tensors: dict[str, np.ndarray]
) -> Path:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_uint32("general.file_type", file_type)
    for key, value in fields.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_string(key, str(value))
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def make_pair(
    directory: Path, name: str = "judge", quant: str = "Q8_0", *, n_embd: int = 32, proj_out: int = 32
) -> tuple[Path, Path]:
    """A small, metadata-correct GGUF pair named by the scheme (enough for the registry; not runnable)."""
    file_type = {"F16": 1, "Q8_0": 7, "Q4_K_M": 15}[quant]
    text = _write_gguf(
        directory / f"{name}-{quant}.gguf",
        "llama",
        file_type,
        {"llama.embedding_length": n_embd, "llama.block_count": 2, "llama.attention.head_count": 4},
        {"token_embd.weight": np.zeros((8, n_embd), dtype=np.float16)},
    )
    mmproj = _write_gguf(
        directory / f"mmproj-{name}-F16.gguf",
        "clip",
        1,
        {"clip.has_vision_encoder": True, "clip.projector_type": "mlp"},
        {"mm.2.weight": np.ones((proj_out, 16), dtype=np.float16)},
    )
    return text, mmproj


def test_manifest_lists_both_judges() -> None:
    known = known_models()
    assert set(known) >= {"prometheus-vision-7b", "prometheus-vision-13b"}
    seven = known["prometheus-vision-7b"]
    assert seven.repo == "prometheus-eval/prometheus-vision-7b-v1.0" and seven.revision == "main"
    assert seven.vision_tower == "openai/clip-vit-large-patch14-336" and seven.license == "Apache-2.0"
    assert (
        seven.source_bytes == 14_130_000_000 and known["prometheus-vision-13b"].source_bytes == 26_700_000_000
    )
    assert set(seven.gguf_bytes) == {"F16", "Q8_0", "Q5_K_M", "Q4_K_M"}
    # models/manifest.toml in the source tree is the same file as the packaged one
    repo_manifest = Path(__file__).resolve().parents[1] / "models" / "manifest.toml"
    assert repo_manifest.resolve() == (
        Path(__file__).resolve().parents[1] / "edgejudge" / "data" / "models.toml"
    )


def test_register_resolve_and_default(work_dir: Path) -> None:
    text, mmproj = make_pair(work_dir)
    entry = make_entry("judge", text, mmproj, source="test")
    assert entry.quant == "Q8_0" and entry.mmproj_quant == "F16"
    assert entry.text_sha256 == sha256_file(text) and entry.text_bytes == text.stat().st_size
    register(entry)
    assert json.loads(registry_path().read_text())["models"][0]["name"] == "judge"
    assert resolve_model("judge") == (text.resolve(), mmproj.resolve())
    assert resolve_model("judge:q8_0") == (text.resolve(), mmproj.resolve())
    # the only installed model is the default when nothing is set
    assert resolve_model(None)[0] == text.resolve()
    # a path, with the mmproj found beside it by name
    assert resolve_model(str(text)) == (text.resolve(), mmproj.resolve())
    assert resolve_model(str(work_dir))[0] == text.resolve()
    with pytest.raises(ModelNotFoundError, match="judge:Q4_K_M"):
        resolve_model("judge:Q4_K_M")
    with pytest.raises(ModelNotFoundError, match="not installed") as info:
        resolve_model("prometheus-vision-7b")
    assert "edgejudge models pull prometheus-vision-7b" in (info.value.hint or "")
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve_model(str(work_dir / "missing-Q4_K_M.gguf"))


def test_a_registered_name_wins_over_a_directory_of_that_name(
    work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, mmproj = make_pair(work_dir)
    register(make_entry("judge", text, mmproj, hash_files=False))
    (work_dir / "cwd" / "judge").mkdir(parents=True)  # e.g. the downloaded checkpoint directory
    monkeypatch.chdir(work_dir / "cwd")
    assert resolve_model("judge") == (text.resolve(), mmproj.resolve())
    with pytest.raises(InputError, match="invalid model name"):
        make_entry("bad name", text, mmproj)


def test_default_env_and_preference(work_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for quant in ("Q8_0", "Q4_K_M"):
        register(make_entry("judge", *make_pair(work_dir, quant=quant), hash_files=False))
    assert find_installed("judge").quant == "Q4_K_M"  # preference order when several are installed
    with pytest.raises(ModelNotFoundError, match="no model given"):
        resolve_model(None)
    monkeypatch.setenv("EDGEJUDGE_DEFAULT_MODEL", "judge:Q8_0")
    assert resolve_model(None)[0].name == "judge-Q8_0.gguf"


def test_models_cli_add_list_path_default_verify_remove(work_dir: Path) -> None:
    text, mmproj = make_pair(work_dir)
    result = runner.invoke(app, ["models", "add", str(text), "--name", "mine", "--json"])
    assert result.exit_code == 0, result.stderr
    added = json.loads(result.stdout)
    assert (
        added["quant"] == "Q8_0"
        and added["mmproj"] == str(mmproj.resolve())
        and len(added["text_sha256"]) == 64
    )

    listing = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    assert [m["key"] for m in listing["installed"]] == ["mine:Q8_0"]
    assert listing["installed"][0]["sha256"] == "recorded" and listing["installed"][0]["present"] is True
    assert {k["name"] for k in listing["known"]} >= {"prometheus-vision-7b", "prometheus-vision-13b"}
    human = runner.invoke(app, ["models", "list"])
    assert human.exit_code == 0 and human.stdout == "" and "mine" in human.stderr

    assert runner.invoke(app, ["models", "path", "mine"]).stdout == f"{text.resolve()}\n"
    assert runner.invoke(app, ["models", "path", "mine", "--mmproj"]).stdout == f"{mmproj.resolve()}\n"

    assert runner.invoke(app, ["models", "default", "mine"]).exit_code == 0
    assert load_registry().default == "mine"
    assert runner.invoke(app, ["models", "default"]).stdout == "mine\n"
    bad = runner.invoke(app, ["models", "default", "nope"])
    assert bad.exit_code == 1 and bad.stderr.startswith("error: no model named 'nope'")

    verify = runner.invoke(app, ["models", "verify", "--json"])
    assert verify.exit_code == 0, verify.stderr
    report = json.loads(verify.stdout)
    assert report["ok"] is True and report["models"][0]["status"] == "ok"
    assert report["models"][0]["metadata"]["n_embd"] == 32
    assert any("not converted by edgejudge" in n for n in report["models"][0]["notes"])

    with text.open("r+b") as fh:  # flip a byte of tensor data: the sha256 must catch it
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 0xFF]))
    verify = runner.invoke(app, ["models", "verify", "mine", "--json"])
    assert verify.exit_code == 1
    assert json.loads(verify.stdout)["models"][0]["status"] == "modified"

    assert runner.invoke(app, ["models", "remove", "mine"]).exit_code == 0
    assert load_registry().models == () and load_registry().default is None
    assert text.exists()  # files are kept unless --delete-files


def test_verify_flags_a_projector_of_the_wrong_width(work_dir: Path) -> None:
    register(make_entry("wide", *make_pair(work_dir, "wide", proj_out=48)))
    result = runner.invoke(app, ["models", "verify", "wide", "--json"])
    assert result.exit_code == 1
    model = json.loads(result.stdout)["models"][0]
    assert model["status"] == "invalid" and "48 != text embedding width 32" in model["problems"][0]


def test_missing_files_and_corrupt_registry(work_dir: Path) -> None:
    text, mmproj = make_pair(work_dir)
    register(make_entry("gone", text, mmproj, hash_files=False))
    text.unlink()
    with pytest.raises(ModelNotFoundError, match="missing"):
        resolve_model("gone")
    result = runner.invoke(app, ["models", "verify", "--json"])
    assert result.exit_code == 1 and json.loads(result.stdout)["models"][0]["status"] == "missing"
    registry_path().write_text("{not json", encoding="utf-8")
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 1 and result.stderr.startswith("error: the model registry")


def test_add_rejects_non_gguf(work_dir: Path) -> None:
    fake = work_dir / "x-Q4_K_M.gguf"
    fake.write_bytes(b"definitely not gguf")
    (work_dir / "mmproj-x-F16.gguf").write_bytes(b"nope")
    result = runner.invoke(app, ["models", "add", str(fake), "--name", "x"])
    assert result.exit_code == 1 and "not a GGUF file" in result.stderr
    assert load_registry().models == ()


def test_pull_offline_unknown_and_hub(work_dir: Path) -> None:
    result = runner.invoke(app, ["models", "pull", "no-such-judge"])
    assert result.exit_code == 1 and "unknown model 'no-such-judge'" in result.stderr
    # HF_HUB_OFFLINE=1 (conftest) and an empty hub cache: a clear error, nothing registered
    result = runner.invoke(app, ["models", "pull", "prometheus-vision-7b"])
    assert result.exit_code == 1
    assert (
        result.stderr.startswith("error: ")
        and "offline" in result.stderr
        and "Traceback" not in result.stderr
    )
    assert load_registry().models == ()
    bad = runner.invoke(app, ["models", "pull", "x", "--source", str(work_dir), "--quant", "Q3"])
    assert bad.exit_code == 1 and "unknown quantization" in bad.stderr


def test_pull_from_local_checkpoint(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EDGEJUDGE_MODELS_DIR", str(tmp_path / "models"))
    args = ["models", "pull", "tiny-judge", "--source", str(tiny_checkpoint), "--quant", "q8_0", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    entry = json.loads(result.stdout)
    assert entry["quant"] == "Q8_0" and entry["already_installed"] is False
    text = Path(entry["text_model"])
    assert text == config.models_dir() / "tiny-judge-Q8_0.gguf" and text.is_file()
    assert entry["text_sha256"] == sha256_file(text)
    again = runner.invoke(app, args)  # already installed: no second conversion
    assert again.exit_code == 0 and json.loads(again.stdout)["already_installed"] is True
    verify = runner.invoke(app, ["models", "verify", "tiny-judge", "--json"])
    assert verify.exit_code == 0, verify.stdout
    meta = json.loads(verify.stdout)["models"][0]["metadata"]
    assert meta["cls_position"] == meta["runtime_cls_position"]
    assert meta["projector_width"] == meta["n_embd"]


def _register_many(prefix: str) -> None:
    from edgejudge.registry import InstalledModel

    for k in range(10):
        register(InstalledModel(name=f"{prefix}-{k}", quant="Q8_0", text_model="/x.gguf", mmproj="/m.gguf"))


def test_concurrent_writers_lose_no_update() -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_register_many, args=(f"w{i}",)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    names = {m.name for m in load_registry().models}
    assert names == {f"w{i}-{k}" for i in range(4) for k in range(10)}


@pytest.mark.parametrize("content", ["[]", '"text"', "{broken", '{"models": [1]}'])
def test_a_damaged_registry_is_one_error_line(content: str) -> None:
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    result = CliRunner().invoke(app, ["models", "list"])
    assert result.exit_code == 1, result.output
    assert "model registry" in result.stderr and "is unreadable" in result.stderr
    assert "hint:" in result.stderr and "unexpected" not in result.stderr


def test_models_list_prints_a_source_with_brackets_as_typed(work_dir: Path) -> None:
    text, mmproj = make_pair(work_dir)
    register(make_entry("judge", text, mmproj, source="/data/[old]/ckpt[/x]", hash_files=False))
    result = CliRunner(env={"COLUMNS": "240"}).invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert "/data/[old]/ckpt[/x]" in result.stderr


# ------------------------------------------------------------------ library functions behind the commands
def test_overview_add_and_remove_are_library_functions(work_dir: Path) -> None:
    from edgejudge.install import add_model, remove_model
    from edgejudge.registry import models_overview, set_default, unregister

    text, mmproj = make_pair(work_dir)
    q4_text = make_pair(work_dir, quant="Q4_K_M")[0]  # the same mmproj serves both quantizations
    with pytest.raises(ModelNotFoundError, match="model file not found"):
        add_model(work_dir / "nope-Q8_0.gguf", "judge")
    entry = add_model(text, "judge")
    assert (
        entry.key == "judge:Q8_0"
        and entry.mmproj == str(mmproj.resolve())
        and entry.source.startswith("added")
    )
    add_model(q4_text, "judge", mmproj=mmproj)
    set_default("judge:Q8_0")
    data = models_overview()
    assert data["default"] == "judge:Q8_0"
    assert [m["key"] for m in data["installed"]] == ["judge:Q4_K_M", "judge:Q8_0"]
    assert [m["default"] for m in data["installed"]] == [False, True]
    assert {k["name"] for k in data["known"]} >= {"prometheus-vision-7b"}
    with pytest.raises(ModelNotFoundError, match="not installed"):
        unregister("other")
    gone = remove_model("judge:Q8_0", delete_files=True)
    assert [m.key for m in gone] == ["judge:Q8_0"]
    assert not text.exists() and mmproj.exists()  # the mmproj is still used by judge:Q4_K_M
    reg = load_registry()
    assert [m.key for m in reg.models] == ["judge:Q4_K_M"] and reg.default is None
    removed, after = unregister("judge")
    assert [m.key for m in removed] == ["judge:Q4_K_M"] and after.models == () and q4_text.exists()


def test_register_pair_is_convert_register(work_dir: Path) -> None:
    from edgejudge.convert import ConvertResult
    from edgejudge.install import register_pair

    text, mmproj = make_pair(work_dir, "made", quant="F16")
    result = ConvertResult(text, mmproj, "made", "F16", "F16", "last", 2, 10, 0.1)
    entry = register_pair(result, source="ckpt/")
    assert entry.key == "made:F16" and entry.source == "ckpt/" and entry.text_sha256 == sha256_file(text)
    assert find_installed("made") == entry


def test_the_public_converter_asks_the_runtime_probe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import edgejudge
    import edgejudge.convert
    import edgejudge.probe
    from edgejudge.install import convert_checkpoint

    assert edgejudge.convert_checkpoint is convert_checkpoint
    seen: dict[str, object] = {}

    def fake_convert(src: object, outdir: object, **kw: object) -> str:
        seen.update(kw)
        return "done"

    monkeypatch.setattr(edgejudge.convert, "convert_checkpoint", fake_convert)
    assert convert_checkpoint("ckpt", tmp_path) == "done"
    assert seen["cls_position"] is edgejudge.probe.runtime_cls_position  # asked by the converter, lazily
    convert_checkpoint("ckpt", tmp_path, cls_position="first")
    assert seen["cls_position"] == "first"
