"""``load.load_judge`` and ``LoadOptions``: one record from "which model, which runtime settings" to a Judge.

The record and its mapping run without a model; the last test loads the tiny real model (converted by
the real converter) on real llama.cpp through ``load_judge`` and ``Judge.from_files``.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from edgejudge.errors import InputError, ModelNotFoundError
from edgejudge.load import LoadOptions, load_judge, registered_name
from edgejudge.load_options import ENGINE_FIELDS
from edgejudge.settings import default


def test_defaults_come_from_the_settings_record() -> None:
    options = LoadOptions()
    for name in ("n_ctx", "n_threads", "n_gpu_layers", "parallel", "image_fit", "verbose", "n_batch"):
        assert getattr(options, name) == default(name)


def test_out_of_bounds_values_are_refused_on_creation() -> None:
    with pytest.raises(InputError, match="n_ctx must be at least"):
        LoadOptions(n_ctx=100)
    with pytest.raises(InputError, match="parallel must be at most"):
        LoadOptions(parallel=99)
    with pytest.raises(InputError, match="verbose must be true or false"):
        LoadOptions(verbose="yes")  # type: ignore[arg-type]


def test_remote_engines_need_servers_and_refuse_the_in_process_runtime_settings() -> None:
    remote = LoadOptions(engine="llama-server", servers=("http://127.0.0.1:8080",), concurrency=2)
    assert remote.remote and remote.remote_options() == {
        "servers": ["http://127.0.0.1:8080"],
        "concurrency": 2,
        "max_parallel": default("parallel"),
        "timeout_s": default("request_timeout"),
    }
    with pytest.raises(InputError, match="needs the URL of at least one server") as no_server:
        LoadOptions(engine="vllm")
    assert no_server.value.about == ("servers",)
    with pytest.raises(InputError, match="n_ctx, n_gpu_layers set for the llama-server engine") as local:
        LoadOptions(engine="llama-server", servers=("http://h:1",), n_ctx=8192, n_gpu_layers=0)
    assert local.value.about == ("n_ctx", "n_gpu_layers")
    with pytest.raises(InputError, match="servers were given but the engine is llama.cpp"):
        LoadOptions(servers=("http://h:1",))
    with pytest.raises(InputError, match="unknown engine 'ollama'"):
        LoadOptions(engine="ollama")
    with pytest.raises(InputError, match="servers must be a list of texts"):
        LoadOptions(engine="vllm", servers=(1,))  # type: ignore[arg-type]


def test_engine_options_are_the_engine_constructor_keywords() -> None:
    from edgejudge.engine.llama import LlamaCppEngine

    accepted = set(inspect.signature(LlamaCppEngine.__init__).parameters)
    options = LoadOptions(n_ctx=2048, n_threads=2, parallel=1, verbose=True)
    kwargs = options.engine_options()
    assert set(kwargs) <= accepted and set(ENGINE_FIELDS) < set(kwargs)
    assert kwargs["max_parallel"] == 1 and kwargs["n_ctx"] == 2048 and kwargs["verbose"] is True


def test_from_engine_options_maps_max_parallel_and_refuses_unknown_keywords() -> None:
    options = LoadOptions.from_engine_options("m.gguf", None, "pad", {"max_parallel": 2, "n_ctx": 1024})
    assert (options.model, options.parallel, options.n_ctx, options.image_fit) == ("m.gguf", 2, 1024, "pad")
    with pytest.raises(TypeError, match="n_cxt"):
        LoadOptions.from_engine_options("m.gguf", None, "crop", {"n_cxt": 1024})
    with pytest.raises(TypeError, match="not both"):
        LoadOptions.from_engine_options("m.gguf", None, "crop", {"max_parallel": 2, "parallel": 2})


def test_an_unknown_image_fit_fails_before_any_model_is_looked_for(tmp_path: Path) -> None:
    options = LoadOptions(model=str(tmp_path / "missing-F16.gguf"), image_fit="stretch")
    with pytest.raises(InputError, match="fit mode"):
        load_judge(options)
    with pytest.raises(ModelNotFoundError):
        load_judge(LoadOptions(model=str(tmp_path / "missing-F16.gguf")))
    assert registered_name(options) is None  # a path is never a registry entry


def test_load_judge_and_from_files_load_the_tiny_model(tiny_gguf: tuple[Path, Path]) -> None:
    from edgejudge.judge import Judge

    text, mmproj = tiny_gguf
    with load_judge(LoadOptions(model=text, n_ctx=1024, n_threads=1, parallel=1, image_fit="pad")) as judge:
        assert judge.engine.n_ctx == 1024 and judge.engine.max_parallel == 1 and judge.image_fit == "pad"
        assert judge.engine.model_name == text.stem
    with Judge.from_files(text, mmproj, n_ctx=1024, n_threads=1, max_parallel=2) as judge:
        assert judge.engine.n_ctx == 1024 and judge.engine.max_parallel == 2


def test_from_files_accepts_the_engine_seed(tmp_path: Path) -> None:
    """``seed`` is an engine option (the default seed of generations that give none), as it always was."""
    from edgejudge.judge import Judge

    options = LoadOptions.from_engine_options("m.gguf", None, "crop", {"seed": 3})
    assert options.seed == 3 and options.engine_options()["seed"] == 3
    assert LoadOptions().seed == default("seed")
    with pytest.raises(InputError, match="seed must be an integer"):
        LoadOptions(seed="3")  # type: ignore[arg-type]
    with pytest.raises(ModelNotFoundError):  # past the options: only the missing file stops it
        Judge.from_files(tmp_path / "missing-F16.gguf", seed=3)
