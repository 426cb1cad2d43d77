"""The one settings record: defaults, bounds and flags written once; ``check`` is the one validation."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from edgejudge.errors import InputError
from edgejudge.settings import (
    GENERATION,
    LOAD,
    MAX_PARALLEL,
    MAX_SAMPLES,
    SETTINGS,
    SETTINGS_KEYS,
    GenerationSettings,
    check,
    default,
    flag_names,
    settings_object,
)


def test_every_setting_is_named_once_and_its_default_passes_its_own_check() -> None:
    names = [s.name for s in (*GENERATION, *LOAD)]
    assert len(names) == len(set(names))
    for name in names:
        assert check(name, default(name)) == default(name)
    assert SETTINGS["max_parallel"] is SETTINGS["parallel"]


def test_the_defaults_are_the_documented_ones() -> None:
    assert default("n_ctx") == 4096 and default("max_tokens") == 1024 and default("parallel") == 4
    assert default("temperature") == 1.0 and default("top_p") == 0.9 and default("repeat_penalty") == 1.0
    assert default("seed") is None and default("samples") == 1 and default("grammar") is True
    assert default("image_fit") == "crop" and default("verbose") is False and default("n_gpu_layers") == -1


def test_flags_name_every_cli_setting() -> None:
    flags = flag_names()
    assert flags["n_threads"] == "--threads" and flags["max_parallel"] == flags["parallel"] == "--parallel"
    assert flags["grammar"] == "--no-grammar" and flags["verbose"] == "--verbose"
    assert flags["top_p"] == "--top-p" and flags["repeat_penalty"] == "--repeat-penalty"
    assert "n_batch" not in flags  # library-only tuning


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("samples", 0, "samples must be at least 1"),
        ("samples", MAX_SAMPLES + 1, f"at most {MAX_SAMPLES}"),
        ("samples", True, "samples must be an integer"),
        ("samples", 2.0, "samples must be an integer"),
        ("temperature", -0.1, "temperature must be at least 0"),
        ("temperature", math.nan, "temperature must be a number"),
        ("temperature", math.inf, "temperature must be a number"),
        ("top_p", 0.0, "top_p must be above 0"),
        ("top_p", 1.01, "top_p must be at most 1"),
        ("repeat_penalty", 0.0, "repeat_penalty must be above 0"),
        ("max_tokens", 0, "max_tokens must be at least 1"),
        ("n_ctx", 255, "n_ctx must be at least 256"),
        ("parallel", MAX_PARALLEL + 1, f"parallel must be at most {MAX_PARALLEL}"),
        ("max_parallel", 0, "max_parallel must be at least 1"),
        ("n_threads", 0, "n_threads must be at least 1"),
        ("grammar", 1, "grammar must be true or false"),
        ("n_ctx", None, "n_ctx must be an integer"),
        ("image_fit", 3, "image_fit must be text"),
    ],
)
def test_check_refuses_out_of_bounds_values_in_library_words(name: str, value: object, words: str) -> None:
    with pytest.raises(InputError, match=words.replace("(", r"\(")) as caught:
        check(name, value)
    hint = caught.value.hint or ""
    assert hint and "--" not in hint and not re.search(r"\w=", hint)  # no CLI flags, no keyword syntax


def test_check_accepts_the_edges() -> None:
    for name, value in [
        ("samples", 1),
        ("samples", MAX_SAMPLES),
        ("temperature", 0),
        ("top_p", 1.0),
        ("top_p", 1e-9),
        ("parallel", MAX_PARALLEL),
        ("n_ctx", 256),
        ("seed", None),
        ("seed", -5),
        ("n_threads", None),
        ("mmproj", Path("p.gguf")),
        ("mmproj", "p.gguf"),
    ]:
        assert check(name, value) == value


def test_generation_settings_check_on_creation_and_write_the_settings_object() -> None:
    with pytest.raises(InputError, match="top_p"):
        GenerationSettings(top_p=0)
    generation = GenerationSettings(temperature=0.0, seed=3, samples=2, grammar=False)
    obj = settings_object(generation, model="tiny-F16", image_fit="pad")
    assert tuple(obj) == SETTINGS_KEYS
    assert obj == {
        "model": "tiny-F16",
        "engine": "llama.cpp",
        "temperature": 0.0,
        "top_p": 0.9,
        "seed": 3,
        "samples": 2,
        "max_tokens": 1024,
        "repeat_penalty": 1.0,
        "image_fit": "pad",
        "grammar": False,
        "parallel": 1,  # the decoding group size: the single-sequence path unless given
    }
    assert settings_object(generation, model="m", image_fit="crop", parallel=4)["parallel"] == 4


# Numbers an advice may write itself because they mean something there, not because they are a default
# or a bound ("temperature 0 (greedy)", "repeat_penalty 1 (off)", "1 decodes one sequence at a time").
_MEANINGFUL = {"temperature": {"0"}, "repeat_penalty": {"1"}, "parallel": {"1"}, "image_cache_size": {"0"}}
_NUMBER = r"-?\d+(?:\.\d+)?"


def _shown(value: object) -> str | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return str(int(value)) if float(value).is_integer() else str(value)


def test_an_advice_never_writes_its_default_or_bounds_by_hand() -> None:
    for spec in {id(s): s for s in SETTINGS.values()}.values():
        if not spec.advice:
            continue
        own = {_shown(v) for v in (spec.default, spec.minimum, spec.maximum, spec.above)} - {None}
        template = re.sub(r"\{\w+\}", "", spec.advice)
        written = set(re.findall(rf"(?<![\w.-]){_NUMBER}(?![\w.])", template))
        assert (written & own) - _MEANINGFUL.get(spec.name, set()) == set(), spec.name


@pytest.mark.parametrize("name", sorted(n for n, s in SETTINGS.items() if s.minimum is not None))
def test_a_refusal_hint_states_the_bounds_and_default_the_check_uses(name: str) -> None:
    spec = SETTINGS[name]
    assert spec.minimum is not None
    with pytest.raises(InputError) as caught:
        check(name, type(spec.default or 1)(spec.minimum) - 1)
    hint = caught.value.hint or ""
    assert name in hint
    for value in re.findall(rf"(?:>=|at least|from)\s+({_NUMBER})", hint):
        assert float(value) == spec.minimum, hint
    for value in re.findall(rf"(?:at most|{_NUMBER} to)\s+({_NUMBER})", hint):
        assert float(value) == spec.maximum, hint
    for value in re.findall(rf"above\s+({_NUMBER})", hint):
        assert float(value) == spec.above, hint
    for value in re.findall(rf"default(?: is)?\s+({_NUMBER})|({_NUMBER}) is the default", hint):
        assert float(value[0] or value[1]) == spec.default, hint


def test_the_n_ctx_hint_agrees_with_its_bound() -> None:
    with pytest.raises(InputError, match="n_ctx must be at least 256") as caught:
        check("n_ctx", 255)
    hint = caught.value.hint or ""
    assert "n_ctx >= 256" in hint and "2048" not in hint
