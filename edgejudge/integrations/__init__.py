"""Integrations with the evaluation tools people already use: the only home of their imports.

- ``inspect``: the Inspect AI scorer ``prometheus_vision`` and its metrics (``pip install
  'edgejudge[inspect]'``; imported on use, so ``edgejudge`` itself never needs ``inspect_ai``).
"""

from __future__ import annotations

__all__: list[str] = []
