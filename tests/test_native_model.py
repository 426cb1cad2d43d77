"""``native.model.TextModel`` on the tiny random-weight model through REAL llama.cpp: a constructor that
fails after loading frees what it allocated (the decode batch, the ``Llama``), and its defaults are the
settings record's."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import llama_cpp
import pytest

from edgejudge.errors import EngineError
from edgejudge.native import model as native_model
from edgejudge.native.model import TextModel
from edgejudge.settings import default


class _Boom(Exception):
    pass


class _Allocations:
    """The Llama objects and decode batches made while a test runs, and which of them were freed (by
    identity: objects of earlier tests collected meanwhile do not count)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: dict[str, list[Any]] = {"batch": [], "llama": []}
        self.freed: dict[str, list[int]] = {"batch": [], "llama": []}
        batch_init, batch_free = llama_cpp.llama_batch_init, llama_cpp.llama_batch_free
        llama_init, llama_close = llama_cpp.Llama.__init__, llama_cpp.Llama.close

        def init_batch(*args: Any) -> Any:
            batch = batch_init(*args)
            self.made["batch"].append(batch)
            return batch

        def free_batch(batch: Any) -> None:
            self.freed["batch"].append(id(batch))
            batch_free(batch)

        def init_llama(llm: llama_cpp.Llama, *args: Any, **kwargs: Any) -> None:
            self.made["llama"].append(llm)
            llama_init(llm, *args, **kwargs)

        def close(llm: llama_cpp.Llama) -> None:
            self.freed["llama"].append(id(llm))
            llama_close(llm)

        monkeypatch.setattr(llama_cpp, "llama_batch_init", init_batch)
        monkeypatch.setattr(llama_cpp, "llama_batch_free", free_batch)
        monkeypatch.setattr(llama_cpp.Llama, "__init__", init_llama)
        monkeypatch.setattr(llama_cpp.Llama, "close", close)

    def counts(self) -> dict[str, tuple[int, int]]:
        """kind -> (made, of those freed at least once)."""
        return {
            kind: (len(objs), sum(id(o) in self.freed[kind] for o in objs))
            for kind, objs in self.made.items()
        }


@pytest.mark.parametrize("error", [_Boom, KeyboardInterrupt, ValueError])
def test_a_failing_setup_step_frees_the_batch_and_the_model(
    tiny_gguf: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
) -> None:
    allocations = _Allocations(monkeypatch)

    def failing_vocab(*args: object) -> None:  # the last setup step, after the batch is allocated
        raise error("vocab setup failed")

    monkeypatch.setattr(native_model, "Vocab", failing_vocab)
    with pytest.raises(error, match="vocab setup failed") as info:
        TextModel(tiny_gguf[0], n_ctx=512, n_threads=1)
    # freed by the constructor itself: the traceback (kept alive by ``info``) still holds the object
    assert info.traceback and allocations.counts() == {"batch": (1, 1), "llama": (1, 1)}


def test_a_failing_context_step_frees_the_model_and_says_what_to_change(
    tiny_gguf: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    allocations = _Allocations(monkeypatch)

    def failing_context(self: TextModel) -> None:
        raise RuntimeError("no room")

    monkeypatch.setattr(TextModel, "_new_context", failing_context)
    with pytest.raises(EngineError, match="for 2 sequences") as info:
        TextModel(tiny_gguf[0], n_ctx=512, n_threads=1, n_seq=2)
    assert info.value.hint and "n_ctx" in info.value.hint
    assert allocations.counts() == {"batch": (0, 0), "llama": (1, 1)}  # no batch was allocated


def test_a_model_that_loads_still_closes_once(
    tiny_gguf: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    allocations = _Allocations(monkeypatch)
    model = TextModel(tiny_gguf[0], n_ctx=512, n_threads=1)
    assert model.n_batch == default("n_batch")
    assert allocations.counts() == {"batch": (1, 0), "llama": (1, 0)}
    model.close()
    model.close()
    assert allocations.counts() == {"batch": (1, 1), "llama": (1, 1)}
    assert len(allocations.freed["batch"]) == 1


def test_n_batch_defaults_to_the_setting() -> None:
    assert inspect.signature(TextModel.__init__).parameters["n_batch"].default == default("n_batch")


@pytest.mark.parametrize("amx", [False, True])
def test_extra_buffer_types_are_off_exactly_on_builds_with_amx(
    tiny_gguf: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, amx: bool
) -> None:
    """The model parameters llama.cpp loads from carry ``use_extra_bufts`` = not AMX (its AMX matmul
    segfaults on Q4_K, llama.cpp issue 20824); the model evaluates (with the extra types on only where
    this machine's build has no AMX kernels: on one that has them, that evaluation is the crash)."""
    really_amx = native_model.has_amx()
    monkeypatch.setattr(native_model, "has_amx", lambda: amx)
    with TextModel(tiny_gguf[0], n_ctx=512, n_threads=1) as model:
        assert model._llm.model_params.use_extra_bufts is (not amx)
        if amx or not really_amx:
            model.eval(model.tokenize("a cat on a sofa", add_bos=True))
            assert model.n_past > 0
