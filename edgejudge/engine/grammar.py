"""The GBNF grammars that guarantee a parseable verdict, and the forced tail.

``VERDICT_GRAMMAR`` lets the model write its own free-text feedback (an optional leading ``Feedback:``,
then any text without ``[``, at most ``MAX_FEEDBACK_CHARS`` characters), then requires ``[RESULT] `` and
one digit 1–5; after the digit the grammar is complete and only end-of-generation can follow. The
training targets end ``... So the overall score is N.\\n[RESULT] N``, which the grammar accepts as is.

``tail_grammar(text)`` is used when ``max_tokens`` runs out before the score: it completes whatever part
of ``[RESULT] `` the text already ends with (or starts a new `` [RESULT] ``) and asks for the digit.

``VERDICT_REGEX`` and ``tail_regex(text)`` are the same two languages as regular expressions (what vLLM's
``structured_outputs.regex`` takes); tests/test_vllm_regex.py checks that each regex and its GBNF accept
and refuse the same strings.
"""

from __future__ import annotations

__all__ = [
    "MARKER",
    "MAX_FEEDBACK_CHARS",
    "VERDICT_GRAMMAR",
    "VERDICT_REGEX",
    "gbnf_literal",
    "tail_grammar",
    "tail_regex",
    "tail_text",
]

MARKER = "[RESULT] "
#: Upper bound on feedback characters (a real feedback is 400–1500 characters; max_tokens bounds it too).
MAX_FEEDBACK_CHARS = 4000

VERDICT_GRAMMAR = rf"""root ::= lead? feedback "[RESULT] " [1-5]
lead ::= [ \t\n]* "Feedback:"
feedback ::= [^\[]{{1,{MAX_FEEDBACK_CHARS}}}
"""


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal (the one escaper of every engine): ``\\`` and ``"`` escaped,
    ``\\n``, ``\\r``, ``\\t`` and the other control characters (``\\xHH``) written as escapes."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def tail_text(generated: str) -> str:
    """The literal that completes ``generated`` up to the digit.

    If the text ends with a prefix of ``[RESULT] `` (e.g. ``"... [RES"``), the rest of the marker;
    otherwise a new marker, preceded by a space unless the text already ends with whitespace.
    """
    start = generated.rfind("[")
    if start >= 0 and MARKER.startswith(generated[start:]):
        return MARKER[len(generated) - start :]
    if not generated or generated[-1].isspace():
        return MARKER
    return " " + MARKER


def tail_grammar(generated: str) -> str:
    """GBNF forcing ``tail_text(generated)`` then one digit 1–5."""
    rest = tail_text(generated)
    return f"root ::= {gbnf_literal(rest)} [1-5]\n" if rest else "root ::= [1-5]\n"


# -- the same languages as regular expressions (vLLM) --------------------------------------------------------
_REGEX_SPECIAL = frozenset("\\.^$|?*+()[]{}")


def _regex_literal(text: str) -> str:
    """A regex matching exactly ``text`` (its regex metacharacters escaped)."""
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in text)


#: ``VERDICT_GRAMMAR`` rule for rule: ``lead?`` is the optional group, ``feedback`` the bounded class.
VERDICT_REGEX = rf"([ \t\n]*Feedback:)?[^\[]{{1,{MAX_FEEDBACK_CHARS}}}" + _regex_literal(MARKER) + "[1-5]"


def tail_regex(generated: str) -> str:
    """``tail_grammar(generated)`` as a regex: ``tail_text(generated)`` then one digit 1–5."""
    return _regex_literal(tail_text(generated)) + "[1-5]"
