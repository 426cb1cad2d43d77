"""The one narrow seam between the judge and a model runtime.

An ``Engine`` takes a prompt split around one image (text before, the fitted image, text after), generation
settings, and returns the generated text with the score distribution read at the digit position. Prefix
reuse, image-embedding caches and native resources are the engine's business; the judge never sees them.

In-process engines: ``LlamaCppEngine`` (edgejudge.engine.llama, real llama.cpp + mtmd) and ``FakeEngine``
(edgejudge.engine.fake, scripted, for plumbing tests and demos of the UI). Remote engines drive existing
inference servers with the same semantics: ``LlamaServerEngine`` (edgejudge.engine.llama_server) and
``VllmEngine`` (edgejudge.engine.vllm), over a ``Fleet`` of servers (edgejudge.engine.fleet). Every engine
implements the whole ``Engine`` Protocol (callers never probe an engine for a method; ``kind`` says which
it is, ``concurrency`` how many calls it serves at once, ``servers`` how its servers are doing) and calls
the checks defined here, so they refuse the same settings and prompts:

- ``check_params``: the generation settings against their bounds in ``edgejudge.settings``;
- ``check_parts``: a prompt's image is the engine's square size, its RGB buffer has the right length and
  its hash is a sha256 hex digest;
- ``check_fits``: THE context-overflow rule. The prompt's positions (image included) plus the generation
  budget must fit ``n_ctx``; the budget is ``max_tokens``, and a constrained run always keeps
  ``TAIL_RESERVE`` positions for the forced ``" [RESULT] d"`` tail. ``over_by`` is how many positions are
  missing. Only the prompt's size is each engine's own (a tokenizer, or the fake's rough count).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..errors import ContextOverflowError, InputError
from ..settings import check, default
from ..verdict import StageTimings

__all__ = [
    "ENGINE_KINDS",
    "PromptParts",
    "GenerationParams",
    "ServerStats",
    "StageTimings",
    "Generation",
    "Engine",
    "TokenCallback",
    "TAIL_RESERVE",
    "check_params",
    "check_parts",
    "check_fits",
    "generation_budget",
]

#: The engines a judge can run on (``Engine.kind``; the ``engine`` setting picks one of the first three).
ENGINE_KINDS = ("llama.cpp", "llama-server", "vllm", "fake")

#: Positions a constrained generation always keeps free for the forced " [RESULT] d" tail.
TAIL_RESERVE = 16

#: Called with each piece of generated text as soon as it is decoded (for live streaming in the UI).
TokenCallback = Callable[[str], None]


@dataclass(frozen=True)
class PromptParts:
    """A prompt with exactly one image between two texts.

    ``before_image`` is the system message plus ``" USER: "``; ``after_image`` starts with ``"\\n"`` and ends
    with ``" ASSISTANT:"``. ``image_rgb`` is raw RGB bytes of ``image_width`` × ``image_height`` (already
    fitted to the tower's input size, so the runtime does no resampling); ``pixels_sha256`` is the sha256
    of those fitted pixels (not of the image file) and identifies the image for caches. The engine adds
    the single BOS itself and never parses special tokens in either text.
    """

    before_image: str
    image_rgb: bytes
    image_width: int
    image_height: int
    pixels_sha256: str
    after_image: str


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings of one generation; defaults and bounds are those of ``edgejudge.settings`` (the
    reference evaluation's: temperature 1.0, top_p 0.9). Engines check them with ``check_params``.

    ``temperature == 0`` means greedy decoding (reproducible). ``constrained`` (the ``grammar`` setting)
    turns on the GBNF grammar (feedback, then ``[RESULT] d``); when ``max_tokens`` runs out before the score
    the engine forces the tail ``" [RESULT] "`` + digit and sets ``Generation.forced_tail``. ``seed`` None
    means random.
    """

    temperature: float = default("temperature")
    top_p: float = default("top_p")
    max_tokens: int = default("max_tokens")
    seed: int | None = default("seed")
    constrained: bool = default("grammar")
    repeat_penalty: float = default("repeat_penalty")


@dataclass(frozen=True)
class Generation:
    """What an engine returns for one generation.

    ``score_probs`` maps 1..5 to the renormalised probability of each digit token at the position where
    the score digit was chosen (None when no such position was reached, e.g. unconstrained text without a
    ``[RESULT]`` marker). ``text`` is the complete generated text, forced tail included. ``warnings`` are
    notes about this one generation that belong on its verdict (e.g. a score distribution a server could
    only read at an approximate context).
    """

    text: str
    score_probs: dict[int, float] | None
    forced_tail: bool = False
    timings: StageTimings = field(default_factory=StageTimings)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServerStats:
    """How one inference server of a remote engine is doing (a snapshot, for progress and summaries).

    ``lanes`` is how many requests it serves at once, ``in_flight`` how many it serves now; ``done`` counts
    the generations finished there, ``failed`` the requests that failed there (moved to another server or
    reported); ``prompt_tokens``/``reused_tokens`` the prompt positions of its generations and how many of
    them came from its prompt cache; ``busy_s`` sums the wall time of its requests.
    """

    url: str
    alive: bool = True
    lanes: int = 1
    in_flight: int = 0
    done: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    reused_tokens: int = 0
    generated_tokens: int = 0
    busy_s: float = 0.0


@runtime_checkable
class Engine(Protocol):
    """A loaded judge model. Engines are context managers; ``close()`` frees native resources."""

    @property
    def kind(self) -> str:
        """Which engine this is: one of ``ENGINE_KINDS`` (written to every verdict's settings)."""
        ...

    @property
    def model_name(self) -> str:
        """The model's identity in verdict settings and batch keys: the text model's file stem (the same
        for every engine running that GGUF pair, so a batch may resume on another of them), or the served
        model's name (vLLM)."""
        ...

    @property
    def image_size(self) -> int:
        """Side of the square image the vision tower expects (336 for CLIP-L/336)."""
        ...

    @property
    def image_tokens(self) -> int:
        """Number of prompt positions one image takes (576 for LLaVA-1.5)."""
        ...

    @property
    def n_ctx(self) -> int:
        """Context window in tokens."""
        ...

    @property
    def max_parallel(self) -> int:
        """The most requests ``generate_many`` decodes together as parallel sequences (1: one at a time)."""
        ...

    @property
    def concurrency(self) -> int:
        """How many ``generate``/``generate_many`` calls the engine serves at once from different threads
        (a batch keeps that many groups in flight): 1 for in-process engines, the lanes of the live servers
        for remote ones."""
        ...

    @property
    def servers(self) -> tuple[ServerStats, ...]:
        """A snapshot of each server's state (remote engines); empty for in-process engines."""
        ...

    @property
    def model_files(self) -> tuple[Path | None, Path | None]:
        """The text model's and the projector's files (None where there is no file: the fake engine), for
        the audit trail of a run."""
        ...

    @property
    def warnings(self) -> tuple[str, ...]:
        """Load-time warnings that belong on every verdict (e.g. an mmproj converted elsewhere)."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes as one separately tokenized segment (no BOS, no special parsing)."""
        ...

    def generate(
        self,
        parts: PromptParts,
        params: GenerationParams,
        on_text: TokenCallback | None = None,
    ) -> Generation:
        """Generate one verdict text. Raises ContextOverflowError before evaluating if it cannot fit."""
        ...

    def generate_many(self, requests: Sequence[tuple[PromptParts, GenerationParams]]) -> list[Generation]:
        """One generation per ``(parts, params)``, in order. Engines may decode requests that share an
        image as parallel sequences. Raises ContextOverflowError (with ``index``) before generating when a
        request cannot fit."""
        ...

    def clear_cache(self) -> None:
        """Forget what is kept between calls (reusable prompt prefix, image embeddings): the next call
        starts cold. Results never depend on it; timings do (benchmarks start each run cold)."""
        ...

    def close(self) -> None:
        """Free native resources; idempotent."""
        ...


# -- the checks every engine shares -----------------------------------------------------------------------
def check_params(params: GenerationParams) -> None:
    """Raise ``InputError`` when a generation setting is outside its bounds (``edgejudge.settings``)."""
    check("temperature", params.temperature)
    check("top_p", params.top_p)
    check("repeat_penalty", params.repeat_penalty)
    check("max_tokens", params.max_tokens)
    check("seed", params.seed)
    check("grammar", params.constrained)


_HEX = frozenset("0123456789abcdef")


def check_parts(parts: PromptParts, image_size: int) -> None:
    """Raise ``InputError`` unless the prompt's image is ``image_size`` square (the engine's tower size),
    its buffer holds exactly width × height RGB pixels and ``pixels_sha256`` is a sha256 hex digest."""
    width, height = parts.image_width, parts.image_height
    if (width, height) != (image_size, image_size):
        raise InputError(
            f"the image is {width}x{height}, the engine expects {image_size}x{image_size}",
            hint="fit the image to the engine's image_size first",
        )
    if len(parts.image_rgb) != width * height * 3:
        raise InputError(
            f"image buffer of {len(parts.image_rgb)} bytes does not match {width}x{height} RGB",
            hint="give raw RGB bytes, width × height × 3 of them",
        )
    sha = parts.pixels_sha256
    if len(sha) != 64 or not _HEX.issuperset(sha):
        raise InputError(
            "pixels_sha256 is not a sha256 hex digest", hint="give the sha256 hex digest of image_rgb"
        )


def generation_budget(params: GenerationParams) -> int:
    """Positions a generation may fill: ``max_tokens``, and at least ``TAIL_RESERVE`` when constrained."""
    return max(params.max_tokens, TAIL_RESERVE) if params.constrained else params.max_tokens


def check_fits(n_prompt: int, params: GenerationParams, n_ctx: int, index: int | None = None) -> None:
    """THE context-overflow rule: raise ``ContextOverflowError`` when ``n_prompt`` positions plus the
    generation budget exceed ``n_ctx`` (``over_by`` = how many too many; ``index`` = the request's place
    in a ``generate_many`` call)."""
    budget = generation_budget(params)
    over_by = n_prompt + budget - n_ctx
    if over_by > 0:
        raise ContextOverflowError(
            f"the prompt ({n_prompt} tokens) plus {budget} generated tokens exceed the "
            f"context window ({n_ctx}) by {over_by} tokens",
            over_by=over_by,
            hint="shorten the inputs, lower max_tokens or raise n_ctx",
            index=index,
        )
