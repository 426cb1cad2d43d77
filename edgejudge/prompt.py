"""The exact Prometheus-Vision training prompt and LLaVA's ``vicuna_v1`` conversation wrapper.

``JUDGE_TEMPLATE`` is byte for byte the string of the Perception-Collection training data (criterion line not
bracketed, no quotes on the output-format line, no trailing newline after ``###Feedback:``). The wrapper is
``SYSTEM_PROMPT + " USER: " + <image> + "\\n" + prompt + " ASSISTANT:"``; ``conversation_parts`` returns the
text before and after the image so the engine can tokenize each part separately (user text can then never
become an image marker or a special token).

Normalisation of user text (instruction, response, reference and the rubric's fields):
line endings ``\\r\\n``/``\\r`` become ``\\n``, trailing whitespace of the whole field and leading *blank
lines* are removed. Nothing inside the text changes (indentation of the first line is kept). Reason: the
training fields never ended in blank lines, and stray newlines around a field change the section layout the
model learned; the content itself is what is being judged and is left alone.

Missing reference answer: the model was always trained with a ``###Reference Answer (Score 5):`` section.
We keep the section and the task description unchanged and put ``NO_REFERENCE_TEXT`` in it, a neutral
sentence saying no reference is available and to judge by the rubric and the image. Dropping the section or
leaving it empty would show the model a layout it never saw (and the task description would still promise a
reference); a plain statement keeps the learned structure and tells the model the truth. An empty or
whitespace-only reference counts as missing. Callers mark such verdicts ``reference: false``.

``parse_rendered_prompt`` reads a judge prompt back into its fields (the reference pipeline's question files
hold the prompt already rendered): it accepts exactly the texts ``render_judge_prompt`` gives, so rendering
what it returns gives the same text again.

``template_sha256`` names this whole format in an audit trail: a change to any of its texts changes it.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import NamedTuple

from .rubric import Rubric

__all__ = [
    "SYSTEM_PROMPT",
    "JUDGE_TEMPLATE",
    "NO_REFERENCE_TEXT",
    "IMAGE_MARKER",
    "normalize_text",
    "has_reference",
    "render_judge_prompt",
    "PromptFields",
    "parse_rendered_prompt",
    "conversation_parts",
    "full_conversation",
    "template_sha256",
]

SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

JUDGE_TEMPLATE = (
    "###Task Description:\n"
    "An instruction (might include an Input inside it), a response to evaluate, a reference answer that gets "
    "a score of 5, and a score rubric representing an evaluation criterion is given.\n"
    "1. Write a detailed feedback that assesses the quality of the response strictly based on the given "
    "score rubric, not evaluating in general.\n"
    "2. After writing a feedback, write a score that is an integer between 1 and 5. You should refer to the "
    "score rubric.\n"
    "3. The output format should look as follows: Feedback: (write a feedback for criteria) [RESULT] "
    "(an integer number between 1 and 5)\n"
    "4. Please do not generate any other opening, closing, and explanations.\n"
    "\n"
    "###The instruction to evaluate:\n"
    "{instruction}\n"
    "\n"
    "###Response to evaluate:\n"
    "{response}\n"
    "\n"
    "###Reference Answer (Score 5):\n"
    "{reference_answer}\n"
    "\n"
    "###Score Rubrics:\n"
    "{criteria}\n"
    "Score 1: {score1_description}\n"
    "Score 2: {score2_description}\n"
    "Score 3: {score3_description}\n"
    "Score 4: {score4_description}\n"
    "Score 5: {score5_description}\n"
    "\n"
    "###Feedback:"
)

NO_REFERENCE_TEXT = (
    "No reference answer is available for this instruction. "
    "Judge the response strictly based on the score rubric and the image."
)

IMAGE_MARKER = "<image>"


def normalize_text(text: str) -> str:
    """Unify line endings, drop trailing whitespace and leading blank lines; the content is unchanged."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").rstrip()
    lines = text.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines)


def has_reference(reference: str | None) -> bool:
    """Whether ``reference`` counts as a reference answer (None, empty or blank do not)."""
    return reference is not None and bool(reference.strip())


def render_judge_prompt(instruction: str, response: str, rubric: Rubric, reference: str | None = None) -> str:
    """The judge prompt (``JUDGE_TEMPLATE`` filled in). ``rubric`` is a ``Rubric`` record (a name or file is
    the caller's to load with ``rubric.load_rubric``: this module does no I/O)."""
    if not isinstance(rubric, Rubric):
        raise TypeError(f"rubric must be a Rubric, got {type(rubric).__name__} (load it with load_rubric)")
    ref = normalize_text(reference) if reference is not None else ""
    fields = {
        "instruction": normalize_text(instruction),
        "response": normalize_text(response),
        "reference_answer": ref if ref.strip() else NO_REFERENCE_TEXT,
        "criteria": normalize_text(rubric.criteria),
    }
    for k, text in enumerate(rubric.descriptions, start=1):
        fields[f"score{k}_description"] = normalize_text(text)
    # str.format inserts the values verbatim: braces inside user text are not interpreted.
    return JUDGE_TEMPLATE.format(**fields)


class PromptFields(NamedTuple):
    """The fields of a rendered judge prompt (``parse_rendered_prompt``): ``reference`` is None when the
    prompt holds ``NO_REFERENCE_TEXT``; ``descriptions`` are the five score descriptions in order."""

    instruction: str
    response: str
    reference: str | None
    criteria: str
    descriptions: tuple[str, str, str, str, str]


#: The template's text between its fields, in order (the literal parts of ``JUDGE_TEMPLATE``).
_LITERALS = tuple(re.split(r"\{[a-z0-9_]+\}", JUDGE_TEMPLATE))


def parse_rendered_prompt(text: str) -> PromptFields | None:
    """The fields of ``text`` when it is a judge prompt as ``render_judge_prompt`` renders it, else None.

    Each field ends at the first occurrence of the template text that follows it, and the result is
    accepted only when rendering it gives ``text`` back byte for byte (so a field that was not normalised,
    a changed heading or a missing section gives None). A field holding one of the template's own headings
    is read at its first occurrence: the fields may then differ from the ones rendered, the prompt does not.
    Pure; never raises."""
    head, tail = _LITERALS[0], _LITERALS[-1]
    if not isinstance(text, str) or len(text) < len(head) + len(tail):
        return None
    if not text.startswith(head) or not text.endswith(tail):
        return None
    body = text[len(head) : len(text) - len(tail)]
    values: list[str] = []
    pos = 0
    for literal in _LITERALS[1:-1]:
        end = body.find(literal, pos)
        if end < 0:
            return None
        values.append(body[pos:end])
        pos = end + len(literal)
    values.append(body[pos:])
    instruction, response, reference, criteria, *descriptions = values
    fields = PromptFields(
        instruction,
        response,
        None if reference == NO_REFERENCE_TEXT else reference,
        criteria,
        (descriptions[0], descriptions[1], descriptions[2], descriptions[3], descriptions[4]),
    )
    rubric = Rubric(name="prompt", criteria=criteria, descriptions=fields.descriptions)
    if render_judge_prompt(instruction, response, rubric, fields.reference) != text:
        return None
    return fields


def conversation_parts(judge_prompt: str) -> tuple[str, str]:
    """``(before_image, after_image)`` = ``(SYSTEM + " USER: ", "\\n" + prompt + " ASSISTANT:")``."""
    return SYSTEM_PROMPT + " USER: ", "\n" + judge_prompt + " ASSISTANT:"


def full_conversation(judge_prompt: str, image_marker: str = IMAGE_MARKER) -> str:
    """The whole conversation as one string, with ``image_marker`` where the image embeddings go."""
    before, after = conversation_parts(judge_prompt)
    return before + image_marker + after


def template_sha256() -> str:
    """sha256 of the whole prompt format: ``SYSTEM_PROMPT``, ``JUDGE_TEMPLATE``, ``NO_REFERENCE_TEXT`` and
    the conversation wrapper as ``full_conversation`` renders it around ``JUDGE_TEMPLATE`` (as a JSON list
    of the four texts, so no two formats give the same bytes). A batch's run record carries it."""
    texts = [SYSTEM_PROMPT, JUDGE_TEMPLATE, NO_REFERENCE_TEXT, full_conversation(JUDGE_TEMPLATE)]
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode("utf-8")).hexdigest()
