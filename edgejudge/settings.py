"""The one settings record: every setting's default, bounds, help text and CLI flag, written once.

``SETTINGS`` maps each setting's name to its ``Setting``: the value's kind, its default, its bounds, the
help line and the command-line flag that sets it (the CLI builds its options from this table and turns a
setting name in a library hint into that flag). Two groups:

- generation settings (``GENERATION``): temperature, top_p, repeat_penalty, max_tokens, seed, samples,
  grammar (the constrained output format; ``GenerationParams`` calls it ``constrained`` inside the
  engine, every output calls it ``grammar``);
- load settings (``LOAD``): model, mmproj, n_ctx, n_threads, n_gpu_layers, parallel (the engine's
  ``max_parallel``), image_fit, verbose, the remote engines' (engine, servers, concurrency,
  request_timeout), the engine tunings without a flag (mmproj_offload, image_cache_size, n_batch) and the
  memory settings (mmap, kv_size, kv_cache_type: their records and trade-offs in ``_settings_memory``).

``check(name, value)`` is THE validation of one value against its bounds (an ``InputError`` whose hint
names the setting bare, in library words); the engines, ``GenerationSettings``, ``load.LoadOptions`` and
the judge call it. ``image_fit``'s vocabulary is ``images.FIT_MODES``, checked by ``images.check_fit``
(this module only checks that it is text: it sits below ``images``).

The records: ``GenerationSettings`` (the generation settings of a judgment; ``settings_object`` writes
from it THE ``settings`` object that ``judge --json`` verdicts and batch rows carry, same keys in both: the
settings that change a verdict; batch resume keys hash it). ``LoadOptions`` (what to load and how) is
in ``edgejudge.load_options``, built from this table.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ._setting_record import GENERATION_PANEL, MODEL_PANEL, SERVERS_PANEL, Setting
from ._setting_record import num_text as _num
from ._settings_memory import MEMORY
from .errors import InputError

__all__ = [
    "Setting",
    "SETTINGS",
    "GENERATION",
    "SETTING_NAMES",
    "LOAD",
    "MAX_SAMPLES",
    "MAX_PARALLEL",
    "GENERATION_PANEL",
    "MODEL_PANEL",
    "SERVERS_PANEL",
    "setting",
    "default",
    "check",
    "advice_for",
    "flag_names",
    "GenerationSettings",
    "SETTINGS_KEYS",
    "KEY_EXEMPT",
    "key_settings",
    "settings_object",
]

#: The most samples one judgment may draw.
MAX_SAMPLES = 64
#: The most sequences one context decodes together (the engine's ``generate_many``).
MAX_PARALLEL = 16

#: The generation settings, in the order ``--help`` lists them.
GENERATION: tuple[Setting, ...] = (
    Setting(
        "samples",
        int,
        1,
        f"Number of verdicts to sample (majority score; at most {MAX_SAMPLES}).",
        flag="--samples",
        minimum=1,
        maximum=MAX_SAMPLES,
        advice="use {minimum} to {maximum} samples (the majority settles long before {maximum})",
    ),
    Setting(
        "temperature",
        float,
        1.0,
        "Sampling temperature; 0 = greedy, reproducible.",
        flag="--temperature",
        minimum=0.0,
        advice="use temperature 0 (greedy) or a positive value (the default {default} is the reference "
        "evaluation's)",
    ),
    Setting(
        "top_p",
        float,
        0.9,
        "Nucleus sampling: draw from the most likely tokens whose probabilities add up to this (1 = off).",
        flag="--top-p",
        above=0.0,
        maximum=1.0,
        advice="use top_p above {above} and at most {maximum} (the default {default} is the reference "
        "evaluation's)",
    ),
    Setting(
        "repeat_penalty",
        float,
        1.0,
        "Penalty on tokens repeated from the last 64; 1 = off (as in the reference evaluation).",
        flag="--repeat-penalty",
        above=0.0,
        advice="use repeat_penalty 1 (off) or another value above {above}",
    ),
    Setting(
        "seed",
        int,
        None,
        "Random seed; several samples use seed, seed+1, ... (unset: a random seed).",
        flag="--seed",
        optional=True,
    ),
    Setting(
        "max_tokens",
        int,
        1024,
        "Generation budget in tokens.",
        flag="--max-tokens",
        minimum=1,
        advice="use max_tokens >= {minimum}",
    ),
    Setting(
        "grammar",
        bool,
        True,
        "Do not constrain the output format (the parser reads the score).",
        flag="--no-grammar",
        inverted=True,
    ),
)
#: The names of the generation settings (a request's, a verdict's ``settings``): the one list of them.
SETTING_NAMES: tuple[str, ...] = tuple(s.name for s in GENERATION)

#: The load settings (model files and the runtime), in the order ``--help`` lists them.
LOAD: tuple[Setting, ...] = (
    Setting(
        "model",
        str,
        None,
        "Registered model name (name or name:QUANT) or path to the text GGUF.",
        flag="--model",
        short="-m",
        panel=MODEL_PANEL,
        optional=True,
    ),
    Setting(
        "mmproj",
        Path,
        None,
        "Projector GGUF (found beside the model when named mmproj-<name>-*.gguf).",
        flag="--mmproj",
        panel=MODEL_PANEL,
        optional=True,
    ),
    Setting(  # a load setting (Judge(engine, image_fit=...) holds it), shown with the generation options
        "image_fit",
        str,
        "crop",
        "crop: shortest side to the tower's size, centre crop (as in training); pad: keep it all.",
        flag="--image-fit",
    ),
    Setting(
        "n_gpu_layers",
        int,
        -1,
        "Layers to offload to the GPU (-1 = all).",
        flag="--n-gpu-layers",
        panel=MODEL_PANEL,
    ),
    Setting(
        "n_threads",
        int,
        None,
        "CPU threads (default: the available cores, half of them above 4).",
        flag="--threads",
        panel=MODEL_PANEL,
        minimum=1,
        optional=True,
        advice="use n_threads >= {minimum}, or leave it unset for the available cores",
    ),
    Setting(
        "n_ctx",
        int,
        4096,
        "Context window in tokens: the most KV cells (allocated as needed, see --kv-size).",
        flag="--n-ctx",
        panel=MODEL_PANEL,
        minimum=256,
        advice="use n_ctx >= {minimum}; the default {default} leaves room for the image (576 tokens with "
        "the LLaVA-1.5 tower) and the prompt",
    ),
    Setting(
        "parallel",
        int,
        4,
        "Judgments of one image decoded together as parallel sequences (samples, batch rows); "
        "1 = one at a time.",
        flag="--parallel",
        panel=MODEL_PANEL,
        minimum=1,
        maximum=MAX_PARALLEL,
        aliases=("max_parallel",),
        advice="use {name} from {minimum} to {maximum} (the default is {default}; 1 decodes one sequence "
        "at a time)",
    ),
    Setting(
        "verbose",
        bool,
        False,
        "Show llama.cpp's own log messages on stderr (they explain why a model fails to load).",
        flag="--verbose",
        panel=MODEL_PANEL,
    ),
    Setting(
        "engine",
        str,
        "llama.cpp",
        "Where the judge runs: llama.cpp (in this process), llama-server or vllm (the servers given "
        "with --server).",
        flag="--engine",
        panel=SERVERS_PANEL,
        metavar="llama.cpp|llama-server|vllm",
        advice="use engine llama.cpp, llama-server or vllm",
    ),
    Setting(
        "servers",
        tuple,
        (),
        "URL of a server to judge on (repeat for a fleet), e.g. http://127.0.0.1:8080.",
        flag="--server",
        panel=SERVERS_PANEL,
        metavar="URL",
    ),
    Setting(
        "concurrency",
        int,
        None,
        "Requests in flight per server (default: its slot count for llama-server, 8 for vLLM).",
        flag="--concurrency",
        panel=SERVERS_PANEL,
        minimum=1,
        maximum=256,
        optional=True,
        advice="use {name} from {minimum} to {maximum}, or leave it unset for the server's own",
    ),
    Setting(
        "request_timeout",
        float,
        600.0,
        "Seconds one request to a server may take before it is retried.",
        flag="--request-timeout",
        panel=SERVERS_PANEL,
        above=0.0,
        advice="use a {name} above {above} seconds (the default is {default})",
    ),
    Setting(
        "mmproj_offload",
        bool,
        True,
        "Run the vision encoder on the GPU when there is one.",
        panel=MODEL_PANEL,
    ),
    Setting(
        "image_cache_size",
        int,
        8,
        "Image embeddings kept (least recently used first out); 0 disables the cache.",
        panel=MODEL_PANEL,
        minimum=0,
        advice="use image_cache_size >= {minimum} (0 disables the cache)",
    ),
    Setting(
        "n_batch",
        int,
        512,
        "Prompt tokens evaluated per batch.",
        panel=MODEL_PANEL,
        minimum=1,
        advice="use n_batch >= {minimum} (the default is {default})",
    ),
    *MEMORY,
)

#: Every setting by name (aliases included: ``SETTINGS["max_parallel"] is SETTINGS["parallel"]``).
SETTINGS: Mapping[str, Setting] = {
    **{s.name: s for s in (*GENERATION, *LOAD)},
    **{alias: s for s in (*GENERATION, *LOAD) for alias in s.aliases},
}


def setting(name: str) -> Setting:
    """The ``Setting`` called ``name`` (or one of its aliases); KeyError for an unknown name."""
    return SETTINGS[name]


def default(name: str) -> Any:
    """The default value of setting ``name``."""
    return SETTINGS[name].default


def flag_names() -> dict[str, str]:
    """Setting name (aliases included) → its CLI flag, for every setting that has one (e.g. ``n_threads``
    → ``--threads``, ``max_parallel`` → ``--parallel``)."""
    return {name: s.flag for name, s in SETTINGS.items() if s.flag is not None}


def _shown(value: Any) -> str:
    return "unset" if value is None else _num(value) if isinstance(value, (int, float)) else str(value)


def advice_for(spec: Setting, name: str | None = None) -> str:
    """``spec.advice`` filled in: ``{name}`` (default: the setting's name), its default and bounds."""
    values = {"default": spec.default, "minimum": spec.minimum, "maximum": spec.maximum, "above": spec.above}
    return (spec.advice or "").format(name=name or spec.name, **{k: _shown(v) for k, v in values.items()})


_KIND_WORDS = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "text",
    Path: "a path",
    tuple: "a list of texts",
}


def _refuse(spec: Setting, name: str, problem: str, value: Any) -> InputError:
    advice = advice_for(spec, name) if spec.advice else f"give {name} as {_KIND_WORDS[spec.kind]}"
    return InputError(f"{name} must be {problem}, got {value!r}", hint=advice)


def check(name: str, value: Any) -> Any:
    """Return ``value`` when it is a valid value of setting ``name``; else raise ``InputError`` naming the
    setting as ``name`` (so ``check("max_parallel", 0)`` says ``max_parallel``) with a hint in library words.

    Integers must be ``int`` (not bool), numbers ``int`` or finite ``float``, flags ``bool``; None only for
    optional settings. ``image_fit`` is only checked to be text here (``images.check_fit`` owns its modes).
    """
    spec = SETTINGS[name]
    if value is None:
        if spec.optional:
            return value
        raise _refuse(spec, name, _KIND_WORDS[spec.kind], value)
    kind = spec.kind
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif kind is Path:
        ok = isinstance(value, (str, os.PathLike))
    elif kind is tuple:
        ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise _refuse(spec, name, _KIND_WORDS[kind], value)
    if spec.choices and value not in spec.choices:
        raise _refuse(spec, name, " or ".join(spec.choices), value)
    if kind in (int, float):
        if spec.minimum is not None and value < spec.minimum:
            raise _refuse(spec, name, f"at least {_num(spec.minimum)}", value)
        if spec.above is not None and value <= spec.above:
            raise _refuse(spec, name, f"above {_num(spec.above)}", value)
        if spec.maximum is not None and value > spec.maximum:
            raise _refuse(spec, name, f"at most {_num(spec.maximum)}", value)
    return value


@dataclass(frozen=True)
class GenerationSettings:
    """The generation settings of one judgment, checked on creation (``check``); defaults from ``SETTINGS``.

    ``grammar`` True constrains the output to feedback then ``[RESULT] d``; ``seed`` None means random.
    """

    temperature: float = default("temperature")
    top_p: float = default("top_p")
    repeat_penalty: float = default("repeat_penalty")
    max_tokens: int = default("max_tokens")
    seed: int | None = default("seed")
    samples: int = default("samples")
    grammar: bool = default("grammar")

    def __post_init__(self) -> None:
        for f in fields(self):
            check(f.name, getattr(self, f.name))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


#: The keys of the ``settings`` object, in the order it is written.
SETTINGS_KEYS = tuple(
    "model engine temperature top_p seed samples max_tokens repeat_penalty image_fit grammar parallel".split()
)


#: The settings keys a batch row's resume key leaves out (see ``settings_object``).
KEY_EXEMPT = ("engine",)


def key_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What of a ``settings`` object a batch row's resume key hashes: all but ``KEY_EXEMPT``, and
    ``parallel`` only when it is not its default, so the outputs of versions that did not record it (runs
    at the default) resume without judging anything again."""
    left_out = {*KEY_EXEMPT, *(["parallel"] if settings.get("parallel") == default("parallel") else [])}
    return {k: v for k, v in settings.items() if k not in left_out}


def settings_object(
    generation: GenerationSettings,
    *,
    model: str,
    image_fit: str,
    engine: str = "llama.cpp",
    parallel: int = 1,
) -> dict[str, Any]:
    """THE ``settings`` object of a judgment: the model, the engine that ran it, the image fit, the
    generation settings and ``parallel``, the decoding group size (``SETTINGS_KEYS``). ``judge --json``
    verdicts and batch rows carry it, and a batch row's resume key hashes it except ``engine``
    (``KEY_EXEMPT``: the engines running one GGUF pair give the same verdicts, so a batch may resume on
    another; ``model`` is the pair's identity).

    ``parallel`` is there because it changes answers: llama.cpp's batched kernels round differently from
    the single-sequence ones, so a greedy text decoded beside other sequences can part from the one
    decoded alone. In a verdict it is the number of sequences its generations were decoded with (1: the
    single-sequence path); in a batch run's key it is the most the run decodes together (the engine's
    ``max_parallel``), so a run resumed with another ``--parallel`` judges its rows again instead of
    mixing the two (``key_settings``: at its default it is left out of the key, so outputs of earlier
    versions resume). The other capacity settings (n_ctx, threads, GPU layers, the memory settings,
    servers) are not in it: they decide whether and how fast a prompt runs, not what the judge answers
    (threads split rows of a product, never a sum; the KV cache's size pads what attention masks out),
    except ``kv_cache_type`` q8_0, which the README names as changing the digits."""
    values = {
        "model": model,
        "engine": engine,
        "image_fit": image_fit,
        "parallel": parallel,
        **generation.to_json(),
    }
    return {key: values[key] for key in SETTINGS_KEYS}
