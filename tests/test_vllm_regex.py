"""``grammar.VERDICT_REGEX`` / ``tail_regex`` (what vLLM enforces) accept and refuse exactly the strings
that ``VERDICT_GRAMMAR`` / ``tail_grammar`` (what llama.cpp enforces) accept and refuse. Pure: the GBNF side
is read by a small GBNF recognizer written here from llama.cpp's grammar format (literals, character
classes, rule references, groups, ``?`` ``*`` ``+`` ``{m,n}``; no comments), not from the verdict
grammar, so each side checks the other; the table also says what the verdict language is meant to be.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from edgejudge.engine import grammar as gbnf

Matcher = Callable[[str, frozenset[int]], frozenset[int]]


class Gbnf:
    """A recognizer for a GBNF grammar: ``accepts(text)`` when ``root`` derives all of ``text``."""

    def __init__(self, source: str) -> None:
        self.rules: dict[str, Matcher] = {}
        bodies: dict[str, str] = {}
        name = ""
        for line in source.splitlines():  # a rule per line (continued on lines without "::=")
            if "::=" in line:
                name, _, body = line.partition("::=")
                name = name.strip()
                bodies[name] = body
            elif line.strip():
                bodies[name] += " " + line
        for rule, body in bodies.items():
            self.src, self.at = body, 0
            self.rules[rule] = self._alternatives()
            self._space()
            assert self.at == len(self.src), f"unparsed GBNF in {rule}: {self.src[self.at :]!r}"

    def accepts(self, text: str) -> bool:
        return len(text) in self.rules["root"](text, frozenset({0}))

    # -- parsing (recursive descent) into matchers: (text, start positions) -> end positions ----------
    def _space(self) -> None:
        while self.at < len(self.src) and self.src[self.at] in " \t\n":
            self.at += 1

    def _peek(self) -> str:
        self._space()
        return self.src[self.at] if self.at < len(self.src) else ""

    def _alternatives(self) -> Matcher:
        options = [self._sequence()]
        while self._peek() == "|":
            self.at += 1
            options.append(self._sequence())

        def match(text: str, starts: frozenset[int]) -> frozenset[int]:
            return frozenset().union(*(m(text, starts) for m in options))

        return match

    def _sequence(self) -> Matcher:
        items: list[Matcher] = []
        while self._peek() not in ("", "|", ")"):
            items.append(self._postfix(self._primary()))

        def match(text: str, starts: frozenset[int]) -> frozenset[int]:
            for m in items:
                starts = m(text, starts)
            return starts

        return match

    def _escape(self) -> str:
        self.at += 1  # the backslash
        c = self.src[self.at]
        self.at += 1
        simple = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]", "-": "-"}
        if c in simple:
            return simple[c]
        width = {"x": 2, "u": 4, "U": 8}[c]
        code = int(self.src[self.at : self.at + width], 16)
        self.at += width
        return chr(code)

    def _char(self) -> str:
        if self.src[self.at] == "\\":
            return self._escape()
        c = self.src[self.at]
        self.at += 1
        return c

    def _primary(self) -> Matcher:
        c = self._peek()
        if c == '"':
            self.at += 1
            literal = ""
            while self.src[self.at] != '"':
                literal += self._char()
            self.at += 1

            def lit(text: str, starts: frozenset[int]) -> frozenset[int]:
                return frozenset(p + len(literal) for p in starts if text.startswith(literal, p))

            return lit
        if c == "[":
            self.at += 1
            negated = self.src[self.at] == "^"
            self.at += negated
            ranges: list[tuple[str, str]] = []
            while self.src[self.at] != "]":
                low = self._char()
                high = low
                if self.src[self.at] == "-" and self.src[self.at + 1] != "]":
                    self.at += 1
                    high = self._char()
                ranges.append((low, high))
            self.at += 1

            def cls(text: str, starts: frozenset[int]) -> frozenset[int]:
                return frozenset(
                    p + 1
                    for p in starts
                    if p < len(text) and any(lo <= text[p] <= hi for lo, hi in ranges) != negated
                )

            return cls
        if c == ".":
            self.at += 1
            return lambda text, starts: frozenset(p + 1 for p in starts if p < len(text))
        if c == "(":
            self.at += 1
            inner = self._alternatives()
            assert self._peek() == ")"
            self.at += 1
            return inner
        found = re.compile(r"[A-Za-z][A-Za-z0-9-]*").match(self.src, self.at)
        assert found, f"GBNF element expected at {self.src[self.at :]!r}"
        self.at = found.end()
        name = found.group()
        return lambda text, starts: self.rules[name](text, starts)

    def _postfix(self, item: Matcher) -> Matcher:
        c = self.src[self.at] if self.at < len(self.src) else ""  # no space before a postfix
        if c in ("?", "*", "+"):
            self.at += 1
            low, high = {"?": (0, 1), "*": (0, None), "+": (1, None)}[c]
        elif c == "{":
            found = re.compile(r"\{(\d+)(,(\d*))?\}").match(self.src, self.at)
            assert found, f"bad repetition at {self.src[self.at :]!r}"
            self.at = found.end()
            low = int(found.group(1))
            high = low if found.group(2) is None else (int(found.group(3)) if found.group(3) else None)
        else:
            return item

        def repeat(text: str, starts: frozenset[int]) -> frozenset[int]:
            ends = set(starts) if low == 0 else set()
            frontier, seen, count = starts, set(starts), 0
            while frontier and (high is None or count < high):
                frontier = item(text, frontier)
                count += 1
                if high is None:
                    frontier = frontier - seen
                    seen |= frontier
                if count >= low:
                    ends |= frontier
            return frozenset(ends)

        return repeat


FEEDBACK = "The response names the square and the field. So the overall score is 4.\n"
LONG = "x" * gbnf.MAX_FEEDBACK_CHARS

#: (text, in the verdict language?)
VERDICTS = [
    (FEEDBACK + "[RESULT] 4", True),
    ("A[RESULT] 1", True),
    ("Fine. [RESULT] 5", True),
    ("Feedback: fine. [RESULT] 3", True),  # the optional lead
    ("\n\tFeedback: fine. [RESULT] 3", True),  # whitespace before the lead
    ("Feedback:[RESULT] 2", True),  # "Feedback:" read as the feedback itself
    ("Feedback: émoji 🙂 ok [RESULT] 2", True),  # any character but "["
    (LONG + "[RESULT] 2", True),  # the longest feedback
    ("Feedback:" + LONG + "[RESULT] 2", True),  # the lead is not counted
    (LONG + "x[RESULT] 2", False),  # one character too many
    ("[RESULT] 3", False),  # no feedback at all
    ("good [x] [RESULT] 3", False),  # a "[" inside the feedback
    ("good [RESULT] ", False),  # no digit
    ("good [RESULT] 6", False),  # not a score
    ("good [RESULT] 0", False),
    ("good [RESULT] 3 and more", False),  # text after the digit
    ("good [RESULT] 3\n", False),
    ("good [RESULT] 33", False),
    ("good [RESULT]3", False),  # the marker's space
    ("good [result] 3", False),
    ("good [RESULT] 3[RESULT] 4", False),
    ("", False),
]

#: the text generated so far, for the forced tail (``tail_text`` completes it)
TAIL_TEXTS = ["", "good", "good ", "good\n", "good [", "good [RES", "good [RESULT]", "good [RESULT] ", "a [b"]


@pytest.mark.parametrize(("text", "valid"), VERDICTS, ids=[repr(t[:24]) for t, _ in VERDICTS])
def test_the_regex_and_the_gbnf_accept_the_same_verdicts(text: str, valid: bool) -> None:
    grammar = Gbnf(gbnf.VERDICT_GRAMMAR)
    regex = re.compile(gbnf.VERDICT_REGEX)
    assert grammar.accepts(text) is valid
    assert (regex.fullmatch(text) is not None) is valid


@pytest.mark.parametrize("generated", TAIL_TEXTS)
def test_the_tail_regex_and_the_tail_grammar_accept_the_same_tails(generated: str) -> None:
    grammar = Gbnf(gbnf.tail_grammar(generated))
    regex = re.compile(gbnf.tail_regex(generated))
    rest = gbnf.tail_text(generated)
    assert (generated + rest).endswith(gbnf.MARKER)  # the tail completes the marker
    candidates = [rest + d for d in "0123456"] + [rest, rest + "3 ", " " + rest + "3", rest[1:] + "3", "3"]
    for candidate in dict.fromkeys(candidates):
        valid = candidate in {rest + d for d in "12345"}
        assert grammar.accepts(candidate) is valid, candidate
        assert (regex.fullmatch(candidate) is not None) is valid, candidate


def test_the_recognizer_reads_gbnf() -> None:
    """The recognizer on the constructs it implements (so a pass above is not a blind spot of its own)."""
    g = Gbnf('root ::= ("ab" | [x-z]+) tail?\ntail ::= "\\n" [^a-c]{2,3}\n')
    for text in ("ab", "xyz", "ab\ndd", "ab\nddd"):
        assert g.accepts(text), text
    for text in ("x\ndddd", "ab\nad", "abx", "", "ab\n"):
        assert not g.accepts(text), text
