"""``Setting``: the record of one setting (kind, default, bounds, help, flag), and the ``--help`` panels.

``edgejudge.settings`` holds the table of every setting built from it; the memory settings' records
(``edgejudge._settings_memory``) use it too, which is why it lives below both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Setting", "GENERATION_PANEL", "MODEL_PANEL", "SERVERS_PANEL", "num_text"]

GENERATION_PANEL = "Generation"
MODEL_PANEL = "Model"
SERVERS_PANEL = "Servers"


@dataclass(frozen=True)
class Setting:
    """One setting: what it is, its default and bounds, and how the CLI offers it.

    ``kind`` is the value's type (``int``, ``float``, ``bool``, ``str`` or ``Path``); ``optional`` allows
    None (its meaning is in ``help``). ``minimum``/``maximum`` are inclusive bounds, ``above`` an exclusive
    lower bound. ``flag`` is the command-line option (None: library only; for an ``inverted`` bool the flag
    turns the setting off, ``--no-grammar``), ``short`` its one-letter form, ``panel`` the ``--help`` panel.
    ``aliases`` are other names the library uses for the same setting (the engine's ``max_parallel``).
    ``advice`` is the hint of a refused value, in library words: ``{name}`` is the name it was given as,
    ``{default}``, ``{minimum}``, ``{maximum}`` and ``{above}`` this setting's own values (so a hint never
    restates a default or a bound by hand). ``metavar`` is how ``--help`` shows the value. ``choices``, when
    given, are the only values a text setting takes.
    """

    name: str
    kind: type
    default: Any
    help: str
    flag: str | None = None
    short: str | None = None
    panel: str = GENERATION_PANEL
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    optional: bool = False
    inverted: bool = False
    aliases: tuple[str, ...] = ()
    advice: str | None = None
    metavar: str | None = None
    choices: tuple[str, ...] = ()


def num_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
