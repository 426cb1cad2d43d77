"""Library words → command-line words: the one place error hints from the library are rewritten for people.

Library hints name settings by their field names, bare (``raise n_ctx to 5000+``, ``lower max_tokens``,
``use samples >= 1``), say ``turn on verbose logging to see llama.cpp's messages`` where the native log
would explain a failure, and never name flags; an error's ``about`` names the parameters its hint asks to
change (``outdir``, ``output``, ``quant``, ``rubric``, ``limit``, ``model``, ``mmproj`` …).
``hint_for_people`` turns a hint into CLI words for the command being run:

- each setting name becomes the flag that sets it (``n_ctx`` → ``--n-ctx``, ``n_threads`` → ``--threads``,
  ``parallel``/``max_parallel`` → ``--parallel`` …) and verbose logging ``--verbose`` (``for_people``);
- the flags of the error's ``about`` are appended: ``choose another output directory (--outdir)``
  (``ABOUT_FLAGS``, the mapping of error kinds to flags).

Only flags the command offers are named: a command without ``--verbose`` never says "re-run with
--verbose", and a flag of another command is never suggested. Error messages are printed as the library
wrote them: they quote paths and user values, which no rewriting may touch.

Inside a hint, quoted spans ('…', "…", `…`) and path-like tokens (holding ``/`` or ``\\``) are left alone,
and so are names inside a longer word or already a flag. A field name that is also an everyday word
(``samples``, ``seed``, ``temperature``, ``parallel``) is a setting only where the text uses it as one:
after a verb of change (``raise``, ``lower``, ``set``, ``use``, ``pass`` …) or before a bound or a value
(``>= 1``, ``= 2``, ``must be``, ``to 8``), and not after an article or a count, so "3 samples agree" and
"the samples must agree" stay English.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "VERBOSE_FLAG",
    "ABOUT_FLAGS",
    "flag_table",
    "about_table",
    "command_options",
    "running",
    "for_people",
    "hint_for_people",
]

VERBOSE_FLAG = "--verbose"

#: The library parameters errors are ``about`` that are not settings → the flag that sets each (the
#: settings' own flags come from ``edgejudge.settings``; see ``about_table``).
ABOUT_FLAGS: dict[str, str] = {
    "outdir": "--outdir",
    "output": "--output",
    "name": "--name",
    "quant": "--quant",
    "mmproj_quant": "--mmproj-quant",
    "source": "--source",
    "rubric": "--rubric",
    "limit": "--limit",
    "image_root": "--image-root",
    "model": "--model",
    "mmproj": "--mmproj",
    "policy": "--policy",
    "instruction": "--instruction",
    "keep": "--keep",
    "review_band": "--review-band",
    "overwrite": "--force",
    "by": "--by",
    "answers": "--answers",
    "servers": "--server",
    "shard": "--shard",
    "port": "--port",
    "binary": "--binary",
    "log": "--log",
}

_CHANGE = r"(?:raise|lower|increase|decrease|reduce|set|use|pass|change|try|give|turn\s+on)"
_AS_SETTING = r"(?=\s*(?:>=|<=|==|=|>|<|must\s+(?:be|not)\b|is\s+(?:too|out|not)\b|to\s+-?\d|of\s+-?\d))"
# not part of a word, a path, a quoted value or an existing flag
_BEFORE = r"(?<![\w/.'\"`-])"
_AFTER = r"(?![\w/'\"`-]|\.\w)"
# an everyday word after an article or a count is English ("the samples must agree", "3 samples")
_NOT_ENGLISH = (
    "".join(
        rf"(?<!\b{word}\s)" for word in ("the", "a", "an", "all", "its", "no", "of", "these", "those", "both")
    )
    + r"(?<!\d\s)"
)
# left alone inside a hint: quoted spans and path-like tokens
_PROTECTED = re.compile(
    r"(?<!\w)'[^'\n]*'(?!\w)|\"[^\"\n]*\"|`[^`\n]*`|‘[^’\n]*’|“[^”\n]*”|[^\s'\"`]*[/\\][^\s'\"`]*"
)


@cache
def flag_table() -> dict[str, str]:
    """Each setting's name (aliases included: ``max_parallel``) → the flag that sets it, from
    ``edgejudge.settings``. Left out: a flag that turns its setting off (``--no-grammar`` is no way to
    "raise grammar") and one-word names whose values are names or files (``model``, ``mmproj``: everyday
    words in hints about models; an error about them names them in ``about``)."""
    from ..settings import SETTINGS, flag_names

    return {
        name: flag
        for name, flag in flag_names().items()
        if not SETTINGS[name].inverted and ("_" in name or SETTINGS[name].kind not in (str, Path))
    }


@cache
def about_table() -> dict[str, str]:
    """What an error may be ``about`` → the flag that sets it: every setting's flag, then ``ABOUT_FLAGS``."""
    from ..settings import flag_names

    return {**flag_names(), **ABOUT_FLAGS}


@cache
def _pattern(names: frozenset[str]) -> re.Pattern[str] | None:
    plain = sorted((n for n in names if "_" not in n), key=len, reverse=True)
    named = sorted((n for n in names if "_" in n), key=len, reverse=True)
    alternatives = []
    if named:
        alternatives.append(_BEFORE + rf"(?P<named>{'|'.join(map(re.escape, named))})" + _AFTER)
    if plain:
        words = "|".join(map(re.escape, plain))
        alternatives.append(rf"(?P<verb>\b{_CHANGE}\s+)(?P<after_verb>{words})" + _AFTER)
        alternatives.append(_BEFORE + _NOT_ENGLISH + rf"(?P<before_value>{words})" + _AFTER + _AS_SETTING)
    return re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None


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


def _rewrite(text: str, names: frozenset[str], verbose: bool) -> str:
    if verbose:
        for verbose_words, replacement in _VERBOSE:
            text = verbose_words.sub(replacement, text)
    pattern = _pattern(names)
    return text if pattern is None else pattern.sub(_flag, text)


def for_people(text: str | None, offered: Collection[str] | None = None) -> str | None:
    """``text`` (a library hint) with setting names written as the flags that set them, and verbose logging
    as ``--verbose``; with ``offered`` (the command's options) only the flags among them. Quoted spans and
    path-like tokens are kept as they are."""
    if not text:
        return text
    table = flag_table()
    names = frozenset(n for n, flag in table.items() if offered is None or flag in offered)
    verbose = offered is None or VERBOSE_FLAG in offered
    out: list[str] = []
    start = 0
    for span in _PROTECTED.finditer(text):
        out.append(_rewrite(text[start : span.start()], names, verbose))
        out.append(span.group())
        start = span.end()
    out.append(_rewrite(text[start:], names, verbose))
    return "".join(out)


#: The command being run (its click command, from the ``typer.Context`` Typer hands ``guard``); None
#: outside one (library code, tests calling ``fail`` directly).
_RUNNING: ContextVar[Any] = ContextVar("edgejudge_running_command", default=None)


@contextmanager
def running(command: Any) -> Iterator[None]:
    """Mark ``command`` (a click command: ``ctx.command``) as the one being run inside the block."""
    token = _RUNNING.set(command)
    try:
        yield
    finally:
        _RUNNING.reset(token)


def command_options() -> frozenset[str] | None:
    """The option names (``--outdir``, ``-o`` …) of the command being run; None outside a command."""
    command = _RUNNING.get()
    if command is None:
        return None
    return frozenset(opt for param in command.params for opt in (*param.opts, *param.secondary_opts))


def about_flags(about: Iterable[str], offered: Collection[str] | None = None) -> list[str]:
    """The flags that set the parameters ``about`` names (with ``offered``, only those among them)."""
    table = about_table()
    flags = [table[name] for name in about if name in table]
    return [f for i, f in enumerate(flags) if f not in flags[:i] and (offered is None or f in offered)]


def _names(text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def hint_for_people(
    hint: str | None, about: Iterable[str] = (), offered: Collection[str] | None = None
) -> str | None:
    """A library ``hint`` in CLI words (``for_people``), followed by the flags of ``about`` it does not
    name yet: ``choose another output directory (--outdir)``. ``offered``: the running command's options
    (None: any flag may be named)."""
    text = for_people(hint, offered)
    if not text:
        return text
    flags = [f for f in about_flags(about, offered) if not _names(text, f)]
    return f"{text} ({', '.join(flags)})" if flags else text
