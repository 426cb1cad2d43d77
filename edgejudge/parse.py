"""Judge output text → ``ParseResult`` (score 1–5, feedback, how it was found, why not). Pure; never raises.

Order of search (the first rule that finds a number decides; a number outside 1–5 or not whole is rejected
with a reason, it never falls through to a weaker rule):

1. ``[RESULT] N`` markers (``result_marker``), and ``[结果] N`` / ``【结果】N`` (``result_marker_zh``).
   The LAST marker followed by a number wins; markers followed by no number (a prompt echo such as
   ``[RESULT] (an integer number between 1 and 5)``, or a range ``1-5``) are skipped. Accepted after the
   marker: ``: N``, ``(N)``, ``N/5``, ``N out of 5``, ``Score: N``, ``Result: N``, markdown ``**``, number
   words ``four``.
2. Phrases judges use, only near the end of the text (at most ``TAIL_CHARS`` characters after them), the last
   one wins: ``So the overall score is N`` (``overall_score``), ``Score: N`` / ``score of N`` / ``I would give
   it a N`` and a bracketed ``(Score N)`` / ``[Score N]`` closing the text (``score_phrase``), ``N/5`` /
   ``N out of 5`` (``fraction``).
3. Nothing: ``method="none"`` with a ``reason``. Never "the first digit anywhere".

Trailing whitespace, punctuation and end-of-sequence tokens (``</s>`` …) are ignored. ``feedback`` is the
text before the marker (stripped, a leading ``Feedback:``/``反馈:`` removed); for phrases, the whole text
minus the phrase's line when that line holds nothing else.

Every step runs in time linear in the text's length, whatever the text: runs of whitespace/markdown are
squeezed before the patterns see them (no pattern can backtrack over a long run), and suffixes (``</s>``,
markdown) are stripped by walking an index back, never by re-copying the text once per token.

``parse_jsonl`` applies ``parse_output`` to one field of each line of a JSONL file's bytes (the records of
``edgejudge parse --jsonl``); a line that cannot be read is an ``error`` record, never an exception.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import _jsonl

__all__ = ["ParseResult", "parse_output", "parse_jsonl", "METHODS", "TAIL_CHARS", "KEEP_FIELDS"]

METHODS = ("result_marker", "result_marker_zh", "overall_score", "score_phrase", "fraction", "none")
TAIL_CHARS = 200

_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
}  # fmt: skip
_NUM = r"(?P<num>[+-]?\d+(?:[.,]\d+)?(?![\d.,]?\d)|(?:" + "|".join(_WORDS) + r")\b)"
# after the number: optional closing bracket, optional denominator; a range ("1-5", "1 and 5") is no score
_NUM_TAIL = (
    r"(?!\s*(?:-|–|~|to\b|and\b)\s*\d)"
    r"[\s*_`]*[)\]）]?"
    r"(?:\s*(?:/|out\s+of)\s*(?P<den>\d+(?:\.\d+)?))?"
)
_JUNK = r"[\s*_`]*"

_MARKER = re.compile(r"\[\s*RESULT\s*\]|(?P<zh>[\[【［]\s*结果\s*[\]】］])", re.IGNORECASE)
_AFTER_MARKER = re.compile(
    _JUNK + r"(?:(?:[:：=]|-(?=\s))" + _JUNK + r")?"
    r"(?:(?:score|rating|result|得分|分数|结果)\s*[:：=]?" + _JUNK + r")?"
    r"[(\[（]?\s*" + _NUM + _NUM_TAIL,
    re.IGNORECASE,
)
_NUMFRAG = r"(?:a\s+|an\s+)?[(\[]?\s*" + _NUM + _NUM_TAIL
_PHRASES = (
    (
        "overall_score",
        re.compile(
            r"\b(?:so\s+)?(?:the\s+|my\s+)?(?:overall|final|total)\s+(?:score|rating|grade)"
            + _JUNK
            + r"(?:is|would\s+be|should\s+be|will\s+be|of|[:=：])"
            + _JUNK
            + _NUMFRAG,
            re.IGNORECASE,
        ),
    ),
    (
        "score_phrase",
        re.compile(
            r"(?<!gets\sa\s)\b(?:score|rating|grade)"
            + _JUNK
            + r"(?:of|is|would\s+be|should\s+be|[:=：])"
            + _JUNK
            + _NUMFRAG,
            re.IGNORECASE,
        ),
    ),
    (
        "score_phrase",
        re.compile(
            r"\b(?:give|assign|award)s?\s+(?:it|this(?:\s+response)?|the\s+response)?\s*" + _NUMFRAG,
            re.IGNORECASE,
        ),
    ),
    (
        # "(Score 4)" / "[Score: 4]" closing the text; not "(Score 5):" as in the template's reference header
        "score_phrase",
        re.compile(
            r"[(\[]\s*(?:score|rating)\s*[:=：]?\s*(?P<num>[+-]?\d+(?:[.,]\d+)?)"
            r"(?:\s*(?:/|out\s+of)\s*(?P<den>\d+(?:\.\d+)?))?\s*[)\]](?=[\s*_`.!。]*\Z)",
            re.IGNORECASE,
        ),
    ),
    (
        "fraction",
        re.compile(
            r"(?<![\d/.,])(?P<num>[+-]?\d+(?:\.\d+)?)\s*(?:/|out\s+of)\s*(?P<den>5)(?![\d/.,]\d|\d|\s+of\b)",
            re.IGNORECASE,
        ),
    ),
)
_EOS_TOKENS = ("</s>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<eos>")
_FEEDBACK_PREFIX = re.compile(r"^[\s#*_>]*(?:feedback|反馈)[\s*_]*[:：][\s*_]*", re.IGNORECASE)
# Long runs of whitespace/markdown are squeezed (on a working copy, positions mapped back) before matching,
# so that no pattern can backtrack over them quadratically.
_RUN = re.compile(r"[\s*_`]{9,}")
_RUN_KEEP = 8
_LINE_JUNK = re.compile(r"^[\s*_`#>.\-:!,;()\[\]]*$")


@dataclass(frozen=True)
class ParseResult:
    """``score``: 1..5 or None; ``feedback``: the judge's text without the score marker; ``method``: one of
    ``METHODS``; ``reason``: why no score was found (None on success); ``raw``: the text as given."""

    score: int | None
    feedback: str
    method: str
    reason: str | None
    raw: str

    @property
    def ok(self) -> bool:
        return self.score is not None

    def to_dict(self) -> dict[str, Any]:
        """The JSON record of the result (``edgejudge parse``): score, feedback, method, reason."""
        return {"score": self.score, "feedback": self.feedback, "method": self.method, "reason": self.reason}


def _strip_eos(text: str) -> str:
    """``text`` without trailing whitespace and end-of-sequence tokens, in any mix and number.

    Walks back from the end with an index (never re-copying the text per token), so a text made of
    nothing but ``" </s>"`` costs linear time."""
    end = len(text)
    while True:
        while end and text[end - 1].isspace():
            end -= 1
        for token in _EOS_TOKENS:
            if text.endswith(token, 0, end):
                end -= len(token)
                break
        else:
            return text[:end]


_TRAILING_MARKDOWN = frozenset("*_`#>")


def _clean_feedback(text: str) -> str:
    # trailing whitespace and markdown left over from a marker such as "**[RESULT]**": one backwards walk
    end = len(text)
    while end and (text[end - 1].isspace() or text[end - 1] in _TRAILING_MARKDOWN):
        end -= 1
    text = _FEEDBACK_PREFIX.sub("", text[:end], count=1)
    return text.strip()


class _Squeezed:
    """``text`` with runs of whitespace/markdown cut to ``_RUN_KEEP`` chars; ``orig`` maps positions back."""

    def __init__(self, text: str) -> None:
        parts: list[str] = []
        self.starts: list[int] = []
        self.origs: list[int] = []
        pos = length = 0
        for run in _RUN.finditer(text):
            segment = text[pos : run.start() + _RUN_KEEP]
            self.starts.append(length)
            self.origs.append(pos)
            parts.append(segment)
            length += len(segment)
            pos = run.end()
        self.starts.append(length)
        self.origs.append(pos)
        parts.append(text[pos:])
        self.text = "".join(parts)
        self.original = text

    def orig(self, index: int) -> int:
        k = bisect.bisect_right(self.starts, index) - 1
        return self.origs[k] + index - self.starts[k]


def _value(match: re.Match[str]) -> tuple[int | None, str | None]:
    """The score of a match, or (None, reason)."""
    token = match.group("num")
    shown = " ".join(match.group(0).split())
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    if token.lower() in _WORDS:
        number = float(_WORDS[token.lower()])
    else:
        try:
            number = float(token.replace(",", "."))
        except ValueError:  # pragma: no cover - the regex only lets numbers through
            return None, f"'{shown}' does not hold a number"
    den = match.groupdict().get("den")
    if den is not None and float(den) != 5:
        return None, f"'{shown}' is on a scale of {den}, not 1-5"
    if not math.isfinite(number) or abs(number) > 1000:
        return None, f"'{shown}' is outside 1-5"
    if number != int(number):
        return None, f"'{shown}': {token} is not a whole number between 1 and 5"
    if not 1 <= number <= 5:
        return None, f"'{shown}': {int(number)} is outside 1-5"
    return int(number), None


def _from_markers(sq: _Squeezed, raw: str) -> ParseResult | None:
    text = sq.text
    found: tuple[re.Match[str], re.Match[str]] | None = None
    for marker in _MARKER.finditer(text):
        after = _AFTER_MARKER.match(text, marker.end())
        if after is not None:
            found = (marker, after)  # keep the last marker that carries a number
    if found is None:
        return None
    marker, after = found
    method = "result_marker_zh" if marker.group("zh") else "result_marker"
    feedback = _clean_feedback(sq.original[: sq.orig(marker.start())])
    score, reason = _value(after)
    if score is None:
        return ParseResult(None, feedback, "none", f"{marker.group(0)} marker rejected: {reason}", raw)
    return ParseResult(score, feedback, method, None, raw)


def _from_phrases(sq: _Squeezed, raw: str) -> ParseResult | None:
    best: tuple[int, int, str, re.Match[str]] | None = None
    for method, pattern in _PHRASES:
        for match in pattern.finditer(sq.text):
            key = (match.end(), -match.start())
            if best is None or key > best[:2]:
                best = (key[0], key[1], method, match)
    if best is None:
        return None
    method, match = best[2], best[3]
    text, start, end = sq.original, sq.orig(match.start()), sq.orig(match.end())
    tail = len(text) - end
    if tail > TAIL_CHARS:
        return ParseResult(
            None,
            _clean_feedback(text),
            "none",
            f"no [RESULT] marker; '{match.group(0).strip()}' is {tail} characters before the end "
            f"(scores are read only in the last {TAIL_CHARS})",
            raw,
        )
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    alone = _LINE_JUNK.match(text[line_start:start]) and _LINE_JUNK.match(text[end:line_end])
    feedback = _clean_feedback(text[:line_start] if alone else text)
    score, reason = _value(match)
    if score is None:
        return ParseResult(None, feedback, "none", f"no [RESULT] marker; {reason}", raw)
    return ParseResult(score, feedback, method, None, raw)


def parse_output(text: str) -> ParseResult:
    """Parse one judge output. Never raises on model text (None is read as an empty output)."""
    raw = text if isinstance(text, str) else ("" if text is None else str(text))
    cleaned = _strip_eos(raw)
    if not cleaned.strip():
        return ParseResult(None, "", "none", "empty output", raw)
    squeezed = _Squeezed(cleaned)
    result = _from_markers(squeezed, raw) or _from_phrases(squeezed, raw)
    if result is not None:
        return result
    return ParseResult(
        None,
        _clean_feedback(cleaned),
        "none",
        "no [RESULT] marker and no score phrase (e.g. 'Score: 4', '4/5') near the end",
        raw,
    )


#: Id fields copied from each input line into its ``parse_jsonl`` record.
KEEP_FIELDS = ("question_id", "id", "answer_id")


def parse_jsonl(data: bytes, *, field: str = "text") -> Iterator[dict[str, Any]]:
    """One record per non-blank line of the JSONL bytes ``data``: ``{"line": N, <the line's id fields>,
    score, feedback, method, reason}`` parsed from the line's ``field``, or ``{"line": N, ..., "error":
    why}`` when the line cannot be (not JSON, nested too deep, an integer too long for Python, not valid
    UTF-8, not a JSON object, the field missing or not text). Never raises; lone surrogates in a valid line
    are replaced with U+FFFD (``_jsonl``)."""
    for lineno, line, replaced in _jsonl.split_lines(data):
        record: dict[str, Any] = {"line": lineno}
        decoded = _jsonl.loads_line(line)
        row: Any = decoded.value
        problem = decoded.problem
        if replaced:  # undecodable bytes: the text is not what was written, so no score is read from it
            problem, row = "not valid UTF-8 (undecodable bytes in the line)", None
        elif problem is None and not isinstance(row, dict):
            problem = f"expected a JSON object, got {type(row).__name__}"
        if problem is not None:
            yield {**record, "error": problem}
            continue
        for key in KEEP_FIELDS:
            if key in row:
                record[key] = row[key]
        text = row.get(field)
        if isinstance(text, str):
            record.update(parse_output(text).to_dict())
        else:
            what = "missing" if text is None else f"not text ({type(text).__name__})"
            record["error"] = f"field {field!r} is {what}"
        yield record
