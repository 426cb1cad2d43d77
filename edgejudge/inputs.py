"""The checks and notes on a judgment's inputs that every caller shares, and the naming of an overflow.

- ``Task``: one judgment's inputs as a record (``Judge.evaluate_tasks`` takes them; ``policy_judge`` builds
  one per rule).
- ``check_texts``: an instruction and a response must be non-blank text (the CLI calls it before loading
  a model); ``check_run``: the number of samples (at most ``settings.MAX_SAMPLES``) and the generation
  settings (``engine.base.check_params``), before any work.
- ``clean_text``/``clean_rubric``: lone surrogates (e.g. from undecodable bytes) replaced with U+FFFD, which
  the tokenizer can encode, with a note for the verdict.
- ``prompt_markers``/``marker_notes``: user text that imitates the prompt's layout (the vicuna_v1 wrapper's
  ``USER:``/``ASSISTANT:`` role markers, the template's ``###`` section headers) tokenizes exactly like the
  real turn, so a response can forge one; the verdict says so rather than pretending it cannot happen.
- ``name_overflow``: a context overflow restated with the longest field and the changes that are each
  enough on their own (shorten that field, lower max_tokens, raise n_ctx: setting names bare, the CLI
  turns them into its flags).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .engine.base import GenerationParams, check_params
from .errors import ContextOverflowError, InputError
from .settings import check

if TYPE_CHECKING:
    from .rubric import Rubric

__all__ = [
    "Task",
    "ROLE_MARKERS",
    "check_texts",
    "check_run",
    "clean_text",
    "clean_rubric",
    "prompt_markers",
    "marker_notes",
    "name_overflow",
    "field_sizes",
]


@dataclass(frozen=True)
class Task:
    """One judgment for ``Judge.evaluate_tasks``: the arguments ``Judge.evaluate`` takes, as a record."""

    image: Any  # an images.ImageInput: a path, bytes, a PIL image or a FittedImage
    instruction: str
    response: str
    rubric: Any  # a Rubric, a built-in name or a rubric file
    reference: str | None = None
    image_name: str | None = None


#: The role markers of the vicuna_v1 wrapper, as ``prompt.conversation_parts`` writes them.
ROLE_MARKERS = ("USER:", "ASSISTANT:")


def check_texts(instruction: object, response: object) -> None:
    """Refuse what no judgment can use: an instruction or response that is not text, or is empty/blank."""
    for label, value in (("instruction", instruction), ("response", response)):
        if not isinstance(value, str):
            raise InputError(
                f"{label} must be text, got {type(value).__name__}", hint=f"pass the {label} as a string"
            )
        if not value.strip():
            raise InputError(f"the {label} is empty", hint=f"give the {label} to judge (it is blank)")


def check_run(samples: int, params: GenerationParams | None) -> tuple[int, GenerationParams]:
    """``(samples, params)`` checked against the settings' bounds (default params for None)."""
    check("samples", samples)
    params = params or GenerationParams()
    check_params(params)
    return samples, params


def clean_text(label: str, value: str, notes: list[str]) -> str:
    """``value`` with lone surrogates replaced by U+FFFD (the tokenizer cannot encode them); noted."""
    from ._jsonl import scrub

    cleaned, count = scrub(value)
    if count:
        notes.append(
            f"the {label} held {count} character(s) that are not valid text (undecodable bytes or lone "
            "surrogates); they were replaced with U+FFFD"
        )
    return str(cleaned)


def clean_rubric(rubric: Rubric, notes: list[str]) -> Rubric:
    """``rubric`` with its texts cleaned as ``clean_text`` does (the same record when nothing changed)."""
    criteria = clean_text("rubric criterion", rubric.criteria, notes)
    descriptions = tuple(
        clean_text(f"rubric's score {k}", d, notes) for k, d in enumerate(rubric.descriptions, 1)
    )
    if criteria == rubric.criteria and descriptions == rubric.descriptions:
        return rubric
    return replace(rubric, criteria=criteria, descriptions=descriptions)  # type: ignore[arg-type]


def _template_headers() -> tuple[str, ...]:
    from .prompt import JUDGE_TEMPLATE

    return tuple(line for line in JUDGE_TEMPLATE.split("\n") if line.startswith("###"))


def prompt_markers(text: str) -> list[str]:
    """The wrapper's role markers and the template's ``###`` headers that ``text`` contains, in order."""
    return [marker for marker in (*ROLE_MARKERS, *_template_headers()) if marker in text]


def marker_notes(fields: dict[str, str | None]) -> list[str]:
    """One verdict note per field (label → text) holding text of the prompt's own layout."""
    notes = []
    for label, value in fields.items():
        found = prompt_markers(value) if value else []
        if found:
            shown = ", ".join(repr(m) for m in found)
            notes.append(
                f"the {label} contains {shown}, text of the judge's own prompt layout: it can imitate a "
                "conversation turn or prompt section and steer the verdict; check this verdict by hand"
            )
    return notes


def name_overflow(
    err: ContextOverflowError,
    *,
    sizes: dict[str, int],
    n_ctx: int,
    max_tokens: int,
    on_servers: bool = False,
) -> ContextOverflowError:
    """``err`` restated for people: the longest field of ``sizes`` (field → its tokens) and each change
    that is enough on its own (shorten it, lower max_tokens, both, or raise n_ctx; ``on_servers``: the
    context is the servers' own, per slot, so that is what to raise)."""
    field = max(sizes, key=lambda k: sizes[k])
    over = err.over_by
    fixes = []  # only the changes that are enough on their own
    if over <= sizes[field]:
        fixes.append(f"shorten the {field} by {over}+ tokens")
    if over < max_tokens:
        fixes.append(f"lower max_tokens from {max_tokens} to {max_tokens - over} or less")
    if not fixes and over < sizes[field] + max_tokens:
        fixes.append(f"shorten the {field} and lower max_tokens ({max_tokens}) by {over}+ tokens in all")
    if on_servers:
        fixes.append(f"start the servers with {n_ctx + over}+ tokens of context per slot")
    else:
        fixes.append(f"raise n_ctx to {n_ctx + over}+")
    return ContextOverflowError(
        f"the prompt does not fit the context window ({n_ctx} tokens): {over} tokens too "
        f"many; the {field} is the longest field ({sizes[field]} tokens)",
        over_by=over,
        field=field,
        hint=", or ".join(fixes),
    )


def field_sizes(
    count_tokens: Callable[[str], int],
    *,
    instruction: str,
    response: str,
    rubric: Rubric,
    reference: str | None,
) -> dict[str, int]:
    """The tokens each overflow-named field takes (response, reference, instruction, rubric), in that order
    (the first of equal sizes is named)."""
    rubric_text = "\n".join((rubric.criteria, *rubric.descriptions))
    return {
        "response": count_tokens(response),
        "reference": count_tokens(reference) if reference else 0,
        "instruction": count_tokens(instruction),
        "rubric": count_tokens(rubric_text),
    }
