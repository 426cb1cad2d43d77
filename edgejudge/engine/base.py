"""The one narrow seam between the judge and a model runtime.

An ``Engine`` takes a prompt split around one image (text before, the fitted image, text after), generation
settings, and returns the generated text with the score distribution read at the digit position. Prefix
reuse, image-embedding caches and native resources are the engine's business; the judge never sees them.

Two engines ship: ``LlamaCppEngine`` (edgejudge.engine.llama, real llama.cpp + mtmd) and ``FakeEngine``
(edgejudge.engine.fake, scripted, for plumbing tests and demos of the UI).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "PromptParts",
    "GenerationParams",
    "StageTimings",
    "Generation",
    "Engine",
    "TokenCallback",
]

#: Called with each piece of generated text as soon as it is decoded (for live streaming in the UI).
TokenCallback = Callable[[str], None]


@dataclass(frozen=True)
class PromptParts:
    """A prompt with exactly one image between two texts.

    ``before_image`` is the system message plus ``" USER: "``; ``after_image`` starts with ``"\\n"`` and ends
    with ``" ASSISTANT:"``. ``image_rgb`` is raw RGB bytes of ``image_width`` × ``image_height`` (already
    fitted to the tower's input size, so the runtime does no resampling); ``pixels_sha256`` is the sha256
    of those fitted pixels (not of the image file) and identifies the image for caches. The engine adds the single BOS itself and never parses special tokens in either text.
    """

    before_image: str
    image_rgb: bytes
    image_width: int
    image_height: int
    pixels_sha256: str
    after_image: str


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings. Defaults follow the reference evaluation (temperature 1.0, top_p 0.9).

    ``temperature == 0`` means greedy decoding (reproducible). ``constrained`` turns on the GBNF grammar
    (feedback, then ``[RESULT] d``); when ``max_tokens`` runs out before the score the engine forces the
    tail ``" [RESULT] "`` + digit and sets ``Generation.forced_tail``. ``seed`` None means random.
    """

    temperature: float = 1.0
    top_p: float = 0.9
    max_tokens: int = 1024
    seed: int | None = None
    constrained: bool = True
    repeat_penalty: float = 1.0


@dataclass(frozen=True)
class StageTimings:
    """Wall-clock seconds per stage of one generation, and token counts."""

    image_encode_s: float = 0.0  # CLIP encode (0 when the embedding came from the cache)
    prompt_eval_s: float = 0.0  # decoding prompt tokens (text and image embeddings) not reused
    generation_s: float = 0.0  # sampling the output
    prompt_tokens: int = 0  # total prompt tokens, image included
    reused_tokens: int = 0  # prompt tokens whose KV entries were reused
    generated_tokens: int = 0
    image_cached: bool = False  # True when the image embedding came from the LRU cache (or a shared prefix)
    parallel: int = 1  # sequences decoded together (generate_many); generation_s is then this one's share

    @property
    def generation_tokens_per_s(self) -> float:
        return self.generated_tokens / self.generation_s if self.generation_s > 0 else 0.0

    @property
    def prompt_tokens_per_s(self) -> float:
        evaluated = self.prompt_tokens - self.reused_tokens
        return evaluated / self.prompt_eval_s if self.prompt_eval_s > 0 else 0.0


@dataclass(frozen=True)
class Generation:
    """What an engine returns for one generation.

    ``score_probs`` maps 1..5 to the renormalised probability of each digit token at the position where
    the score digit was chosen (None when no such position was reached, e.g. unconstrained text without a
    ``[RESULT]`` marker). ``text`` is the complete generated text, forced tail included.
    """

    text: str
    score_probs: dict[int, float] | None
    forced_tail: bool = False
    timings: StageTimings = field(default_factory=StageTimings)


@runtime_checkable
class Engine(Protocol):
    """A loaded judge model. Engines are context managers; ``close()`` frees native resources."""

    @property
    def model_name(self) -> str:
        """A human name for the model (file stem or registry name)."""
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

    def close(self) -> None:
        """Free native resources; idempotent."""
        ...
