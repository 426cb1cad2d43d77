"""``Closing``: the one context-manager mixin of the package (``with x:`` calls ``x.close()``).

Shared by the native wrappers (model, mtmd chunk lists), the engines and ``Judge``. It imports nothing, so
every layer may use it. Every ``close()`` it wraps is idempotent.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["Closing"]

_Self = TypeVar("_Self", bound="Closing")


class Closing:
    """Mixin: ``__enter__`` returns the object, ``__exit__`` closes it (exceptions propagate)."""

    def close(self) -> None:  # pragma: no cover - always overridden
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
