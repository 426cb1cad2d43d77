"""Library words → command-line words: the one place error text from the library is rewritten for people.

Library errors name settings by their field names, bare (``raise n_ctx to 5000+``, ``lower max_tokens``,
``use samples >= 1``) and say ``turn on verbose logging to see llama.cpp's messages`` where the native log
would explain a failure; they never name flags. ``for_people`` turns each setting name into the flag that
sets it (``n_ctx`` → ``--n-ctx``, ``n_threads`` → ``--threads``, ``parallel``/``max_parallel`` →
``--parallel`` …) and verbose logging into ``--verbose``. ``guard``/``fail`` and the wizard apply it to
every library error's message and hint.

Matching is on whole names: a name inside a longer word, a path (``/data/n_ctx/``), quotes (a user's value
such as ``'seed'``) or already a flag is left alone. A field name that is also an everyday word
(``samples``, ``seed``, ``temperature``, ``parallel``) is a setting only where the text uses it as one:
after a verb of change (``raise``, ``lower``, ``set``, ``use``, ``pass`` …) or before a bound or a value
(``>= 1``, ``= 2``, ``must …``, ``to 8``), so "3 samples agree" stays English.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

__all__ = ["VERBOSE_FLAG", "flag_table", "for_people"]

VERBOSE_FLAG = "--verbose"

_CHANGE = r"(?:raise|lower|increase|decrease|reduce|set|use|pass|change|try|give|turn\s+on)"
_AS_SETTING = r"(?=\s*(?:>=|<=|==|=|>|<|must\b|is\s+(?:too|out|not)\b|to\s+-?\d|of\s+-?\d))"
# not part of a word, a path, a quoted value or an existing flag
_BEFORE = r"(?<![\w/.'\"`-])"
_AFTER = r"(?![\w/'\"`-]|\.\w)"


@cache
def flag_table() -> dict[str, str]:
    """Each setting's name (aliases included: ``max_parallel``) → the flag that sets it, from
    ``edgejudge.settings``. Left out: a flag that turns its setting off (``--no-grammar`` is no way to
    "raise grammar") and one-word names whose values are names or files (``model``, ``mmproj``: everyday
    words in messages about models, and a hint about them says what to pass in words)."""
    from ..settings import SETTINGS, flag_names

    return {
        name: flag
        for name, flag in flag_names().items()
        if not SETTINGS[name].inverted and ("_" in name or SETTINGS[name].kind not in (str, Path))
    }


@cache
def _pattern() -> re.Pattern[str]:
    table = flag_table()
    plain = sorted((n for n in table if "_" not in n), key=len, reverse=True)
    named = sorted((n for n in table if "_" in n), key=len, reverse=True)
    alternatives = [_BEFORE + rf"(?P<named>{'|'.join(map(re.escape, named))})" + _AFTER]
    if plain:
        words = "|".join(map(re.escape, plain))
        alternatives.append(rf"(?P<verb>\b{_CHANGE}\s+)(?P<after_verb>{words})" + _AFTER)
        alternatives.append(_BEFORE + rf"(?P<before_value>{words})" + _AFTER + _AS_SETTING)
    return re.compile("|".join(alternatives), re.IGNORECASE)


_VERBOSE = (
    (
        re.compile(r"\b(?:turn\s+on|re-?run\s+with)\s+verbose\s+logging\b", re.I),
        f"re-run with {VERBOSE_FLAG}",
    ),
    (re.compile(r"\bverbose\s+logging\b", re.I), VERBOSE_FLAG),
    (re.compile(r"(?<![\w-])verbose\s*=\s*True\b"), VERBOSE_FLAG),  # an old-style hint: a safety net
)


def _flag(match: re.Match[str]) -> str:
    table = flag_table()
    if match.group("named") is not None:
        return table[match.group("named").lower()]
    if match.groupdict().get("after_verb") is not None:
        return match.group("verb") + table[match.group("after_verb").lower()]
    return table[match.group("before_value").lower()]


def for_people(text: str | None) -> str | None:
    """``text`` (a library message or hint) with setting names written as the flags that set them."""
    if not text:
        return text
    for pattern, replacement in _VERBOSE:
        text = pattern.sub(replacement, text)
    return _pattern().sub(_flag, text)
