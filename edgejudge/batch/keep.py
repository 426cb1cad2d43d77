"""Which input fields a batch may ``keep`` (copy unchanged into its output rows).

Any field but the keys edgejudge writes in its rows (``result.OUTPUT_KEYS``: a result row's and a rule
row's, and ``kind``, the key that makes a line a decision, run or override record) and the fields it
reads from an input row (``input_fields.READ_FIELDS``): a kept ``rule_id`` would make a plain row read
back as a rule row, a kept ``kind`` a row read as a record, and both would be judged again on every run.
The keys only a record has (``note``, ``decision``, ``reviewer``, ``at``, ``input``, ...) can be kept: a
row without ``kind`` is never read as a record. ``check_keep`` refuses the reserved names before anything
is read (the CLI: before the model loads); the pass-through fields (``PASS_THROUGH``) are kept anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InputError
from .input_fields import PASS_THROUGH, READ_FIELDS
from .result import OUTPUT_KEYS

__all__ = ["RESERVED", "check_keep"]

#: The names ``keep`` refuses (see the module docstring).
RESERVED = (OUTPUT_KEYS | {"kind"} | READ_FIELDS) - set(PASS_THROUGH)


def check_keep(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple; ``InputError`` (about ``keep``) naming the first that edgejudge writes or
    reads itself, or that is not a field name (empty)."""
    for name in names:
        if not isinstance(name, str) or not name:
            raise InputError(
                f"cannot keep the field {name!r}: not a field name",
                hint="name the input fields to copy into the output rows",
                about="keep",
            )
        if name in RESERVED:
            what = "reads" if name in READ_FIELDS else "writes"
            raise InputError(
                f"cannot keep the field {name!r}: edgejudge {what} that field itself",
                hint="keep only fields edgejudge does not use (rename the field in the input to keep it)",
                about="keep",
            )
    return tuple(names)
